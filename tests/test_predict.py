"""Prediction on image files: real CIFAR-10 images in many modes and sizes, and broken files."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ravit
from ravit.config import model_config
from ravit.data import load_data, match_channels
from ravit.data.base import decode_image
from ravit.evaluation import eval_transform
from ravit.models import RAViT
from ravit.runtime import collect_image_paths, load_image, predict

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
INFO = {
    "classes": CLASSES,
    "mean": [0.4914, 0.4822, 0.4465],
    "std": [0.247, 0.2435, 0.2616],
    "spec": "cifar10",
}


@pytest.fixture
def cifar(data_root) -> np.ndarray:
    """Twelve real CIFAR-10 test images, uint8 (N, 32, 32, 3)."""
    ds = load_data("cifar10:" + str(data_root / "cifar10-subset"), "test")
    images, _ = ds.get_batch(torch.arange(12))
    return images.permute(0, 2, 3, 1).numpy()


def _save(im: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


@pytest.fixture
def folder(cifar, tmp_path) -> Path:
    """A folder of good images in many modes, sizes and formats, and some broken files."""
    root = tmp_path / "images"
    rgb = [Image.fromarray(a) for a in cifar]
    big = rgb[2].resize((64, 48), Image.Resampling.BICUBIC)
    rgba = big.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((64, 48)))
    _save(rgb[0], root / "a_rgb.png")
    _save(rgb[1], root / "b_rgb.jpg", quality=95)
    _save(rgba, root / "c_rgba_64x48.png")
    _save(rgb[3].convert("L"), root / "d_grey.png")
    _save(rgb[4].quantize(16), root / "e_palette.png")
    _save(rgb[5].convert("1"), root / "f_bilevel.png")
    _save(rgb[6].convert("LA"), root / "g_grey_alpha.png")
    grey16 = (np.asarray(rgb[7].convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    _save(Image.fromarray(grey16), root / "h_grey16.png")
    _save(rgb[8].convert("CMYK"), root / "i_cmyk.jpg")
    _save(rgb[9].resize((30, 100)), root / "sub" / "j_tall.bmp")
    _save(rgb[10].convert("P"), root / "sub" / "deeper" / "k_anim.gif")
    _save(rgb[11], root / "L_UPPER.PNG")
    # Broken: random bytes, a truncated JPEG, an empty file; text is skipped in a folder.
    rng = np.random.default_rng(0)
    (root / "x_random.png").write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    (root / "y_truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "z_empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image\n")
    (root / ".hidden.png").write_bytes(b"junk")
    return root


GOOD = [
    "L_UPPER.PNG", "a_rgb.png", "b_rgb.jpg", "c_rgba_64x48.png", "d_grey.png", "e_palette.png",
    "f_bilevel.png", "g_grey_alpha.png", "h_grey16.png", "i_cmyk.jpg",
    "sub/deeper/k_anim.gif", "sub/j_tall.bmp",
]  # fmt: skip
BAD = ["x_random.png", "y_truncated.jpg", "z_empty.png"]


def small_model() -> RAViT:
    return RAViT(model_config("cifar10", "1-3", embed_dim=32, num_heads=2)).eval()


def test_collect_image_paths(folder):
    found = collect_image_paths(folder)
    rel = [p.relative_to(folder).as_posix() for p in found]
    assert rel == sorted(GOOD + BAD)  # recursive, sorted; notes.txt and .hidden.png skipped
    explicit = collect_image_paths([folder / "notes.txt", folder / "sub", folder / "a_rgb.png"])
    assert explicit == [folder / "notes.txt", folder / "sub/deeper/k_anim.gif",
                        folder / "sub/j_tall.bmp", folder / "a_rgb.png"]  # fmt: skip
    assert collect_image_paths(str(folder / "a_rgb.png")) == [folder / "a_rgb.png"]
    assert collect_image_paths([folder / "a_rgb.png", folder]).count(folder / "a_rgb.png") == 1


def test_load_image_conversions(folder, cifar):
    def load(name, channels=3):
        x = load_image(folder / name, channels, 32)
        assert x.dtype == torch.uint8 and x.shape == (channels, 32, 32)
        return x

    rgb = torch.from_numpy(cifar).permute(0, 3, 1, 2)
    assert torch.equal(load("a_rgb.png"), rgb[0])  # lossless, already 32 x 32: untouched
    assert (load("b_rgb.jpg").int() - rgb[1].int()).abs().float().mean() < 4  # JPEG noise
    grey = load("d_grey.png")
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    luma = match_channels(rgb[3:4], 1)[0]
    assert (load("d_grey.png", 1).int() - luma.int()).abs().max() <= 1
    assert set(load("f_bilevel.png").unique().tolist()) <= {0, 255}
    grey7 = np.array(Image.fromarray(cifar[7]).convert("L"))
    assert torch.equal(load("h_grey16.png", 1)[0], torch.from_numpy(grey7))  # 16 bit / 257
    # Alpha is composited on white: the transparent top rows turn white, the opaque bottom not.
    rgba = load("c_rgba_64x48.png")
    assert rgba[:, 0].float().mean() > 240 and rgba[:, -1].float().mean() < 200
    # 64 x 48 -> shorter side 32 -> 43 x 32 -> centre crop: the same geometry as image folders.
    jpeg = folder / "sub" / "j_tall.bmp"
    assert torch.equal(load_image(jpeg, 3, 32), torch.from_numpy(decode_image(jpeg, 3, 32)))
    assert load("i_cmyk.jpg").shape == (3, 32, 32)


@pytest.mark.parametrize("name, match", [
    ("x_random.png", "not a readable image"),
    ("y_truncated.jpg", "not a readable image"),
    ("z_empty.png", "empty file"),
    ("notes.txt", "not a readable image"),
])  # fmt: skip
def test_load_image_errors_name_the_file(folder, name, match):
    with pytest.raises(ValueError, match=match) as err:
        load_image(folder / name, 3, 32)
    assert str(folder / name) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_image(folder / "missing.png", 3, 32)


def test_predict_answers_good_files_and_reports_bad_ones(folder):
    model = small_model()
    files = collect_image_paths([folder, folder / "notes.txt", folder / "missing.png"])
    results = list(predict(model, INFO, files, thresholds=0.0, batch_size=5))
    assert [r.path for r in results] == files
    by_name = {r.path.relative_to(folder).as_posix(): r for r in results}
    assert {n for n, r in by_name.items() if r.ok} == set(GOOD)
    for name in BAD + ["notes.txt", "missing.png"]:
        err = by_name[name]
        assert not err.ok and str(folder / name) in err.message and "\n" not in err.message
        assert err.to_dict() == {"path": str(folder / name), "error": err.message}
    cost = ravit.model_cost(model.cfg)
    for name in GOOD:
        r = by_name[name]
        assert r.exit == 2 and r.flops == cost.total_flops  # thresholds 0: the full path
        assert r.class_name == CLASSES[r.class_index] and 0 < r.probability <= 1
        assert set(r.to_dict()) == {"path", "class_index", "class_name", "probability", "exit",
                                    "entropy", "flops"}  # fmt: skip


def test_predict_equals_early_exit_on_the_same_batch(folder):
    model = small_model()
    files = [folder / n for n in GOOD]
    x = eval_transform(model, INFO)(torch.stack([load_image(f, 3, 32) for f in files]))
    with torch.inference_mode():
        h1 = ravit.exits.entropy(model(x).logits[0]).sort().values
    tau = float((h1[5] + h1[6]) / 2)  # about half leave at exit 1
    expected = model.early_exit(x, tau)
    assert 0 < int((expected.exit_index == 0).sum()) < len(files)
    probs = torch.softmax(expected.logits, -1)
    cost = ravit.model_cost(model.cfg)
    for batch_size in (4, 64):
        results = list(predict(model, INFO, files, thresholds=[tau], batch_size=batch_size))
        assert all(r.ok for r in results)
        for i, r in enumerate(results):
            e = int(expected.exit_index[i])
            assert (r.class_index, r.exit) == (int(expected.prediction[i]), e + 1)
            assert r.flops == cost.exits[e].cumulative_flops
            assert r.entropy == pytest.approx(float(expected.entropy[i]), abs=1e-5)
            assert r.probability == pytest.approx(float(probs[i, r.class_index]), abs=1e-5)


def test_predict_checks_its_arguments_before_reading(folder):
    model = small_model()
    with pytest.raises(ValueError, match="data_info names 3 classes but the model predicts 10"):
        predict(model, {**INFO, "classes": ["a", "b", "c"]}, folder)
    with pytest.raises(ValueError, match="unknown exit policy"):
        predict(model, INFO, folder, policy="vibes")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        predict(model, INFO, folder, batch_size=0)
    with pytest.raises(ValueError, match="thresholds must be >= 0"):
        predict(model, INFO, folder, thresholds=-1)
    assert list(predict(model, INFO, [])) == []


def test_load_image_applies_exif_orientation_and_palette_transparency(tmp_path):
    a = np.zeros((40, 60, 3), np.uint8)
    a[:, :30] = 255  # left half white
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(tmp_path / "turned.jpg", exif=exif.tobytes())
    x = load_image(tmp_path / "turned.jpg", 3, 32).float()
    assert x[:, 0].mean() > 250 and x[:, -1].mean() < 5  # the white half is now on top
    im.convert("P").save(tmp_path / "clear.gif", transparency=0)  # black is transparent
    assert load_image(tmp_path / "clear.gif", 1, 32).min() == 255  # composited on white
