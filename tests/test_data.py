"""Data readers, specs, splits and downloads: real shared data plus tiny fixtures."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ravit.data import (
    DATASETS,
    FolderDataset,
    ImageDataset,
    InMemoryDataset,
    download_dataset,
    load_data,
    parse_data_spec,
    train_val_split,
)
from ravit.data import download as dl
from ravit.data.digits import digits_split

# -- fixture writers -------------------------------------------------------


def write_pickle(path: Path, obj) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def cifar10_folder(root: Path, n: int = 6, seed: int = 0) -> Path:
    """A tiny CIFAR-10 python-version folder: 5 train batches + test, n images each."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 10000})
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
        }
        write_pickle(folder / name, batch)
    return folder


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> Path:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def idx_folder(root: Path, n: int = 5, *, compress: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)
    return root


def save_image(path: Path, size=(8, 8), color=(10, 20, 30), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(path)
    return path


def tiny_imagenet(root: Path) -> Path:
    base = root / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # unsorted on purpose: labels follow sorted wnids
    # Colour by position in wnids.txt: n02 -> 0, n01 -> 80, n03 -> 160.
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01\tgoldfish, Carassius\nn02\tcat\nn03\tcat\nn99\tother\n")
    for i, wnid in enumerate(wnids):
        for j in range(2):
            save_image(
                base / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", (64, 64), (i * 80,) * 3
            )
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("ignored\n")
    lines = []
    for j, wnid in enumerate(["n03", "n01"]):
        save_image(base / "val" / "images" / f"val_{j}.JPEG", (64, 64))
        lines.append(f"val_{j}.JPEG\t{wnid}\t0\t0\t10\t10")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def image_tree(root: Path) -> Path:
    for split in ("train", "val"):
        save_image(root / split / "cat" / "a.JPG", (40, 30), (200, 0, 0))
        save_image(root / split / "cat" / "b.png", (30, 30), (0, 200, 0))
        save_image(root / split / "dog" / "c.jpeg", (30, 40), (0, 0, 200))
    (root / "train" / "dog" / ".DS_Store").write_bytes(b"\0")
    return root


# -- real data -------------------------------------------------------------


def test_cifar10_subset_reads_unchanged(data_root):
    folder = data_root / "cifar10-subset"
    train = load_data(f"cifar10:{folder}", "train")
    test = load_data(f"cifar10:{folder / 'cifar-10-batches-py'}", "test")
    assert isinstance(train, InMemoryDataset)
    assert (len(train), len(test)) == (5 * 1017, 1017)  # counted from the arrays
    assert train.classes[:3] == ["airplane", "automobile", "bird"] and train.num_classes == 10
    assert (train.channels, train.image_size, train.augment) == (3, 32, "crop-flip")
    assert train.mean == (0.4914, 0.4822, 0.4465) and train.std == (0.2470, 0.2435, 0.2616)
    assert train.labels.dtype == torch.int64 and int(train.labels.max()) == 9
    # Row layout: R(1024) G(1024) B(1024), row-major 32x32.
    with open(folder / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    images, labels = test.get_batch(torch.tensor([0, 5]))
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 32, 32)
    assert torch.equal(images[1, 2, 3], torch.from_numpy(raw[b"data"][5, 2048 + 96 : 2048 + 128]))
    assert labels.tolist() == [raw[b"labels"][0], raw[b"labels"][5]]


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_subset_rewritten_by_python3_reads_the_same(data_root, tmp_path, protocol):
    """Python 3 at protocol 2 writes every bytes object as _codecs.encode(text, 'latin1'),
    and numpy at protocol 5 writes arrays through _frombuffer: both read, same pixels."""
    source = data_root / "cifar10-subset" / "cifar-10-batches-py"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for path in sorted(source.iterdir()):
        if path.name.startswith(("data_batch", "test_batch", "batches.meta")):
            with open(path, "rb") as f:
                obj = pickle.load(f, encoding="bytes")
            with open(folder / path.name, "wb") as f:
                pickle.dump(obj, f, protocol=protocol)
    if protocol == 2:
        assert b"_codecs\nencode" in (folder / "test_batch").read_bytes()
    for split in ("train", "test"):
        ours = load_data(f"cifar10:{folder}", split)
        official = load_data(f"cifar10:{source}", split)
        assert torch.equal(ours.images, official.images)
        assert torch.equal(ours.labels, official.labels) and ours.classes == official.classes


@pytest.mark.parametrize(
    "payload, match",
    [
        (pickle.dumps(b"x", protocol=2).replace(b"latin1", b"rot_13"), r"calls _codecs\.encode\("),
        (b"\x80\x02c__builtin__\nbytes\nK\x05\x85R.", r"calls bytes\(5\)"),
    ],
)  # fmt: skip
def test_protocol2_helpers_accept_only_what_python3_writes(tmp_path, payload, match):
    (tmp_path / "test_batch").write_bytes(payload)
    names = [f"class{i}".encode() for i in range(10)]
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    with pytest.raises(ValueError, match=f"test_batch: refused to unpickle: it {match}"):
        load_data(f"cifar10:{tmp_path}", "test")


def test_fashion_mnist_full(data_root):
    train = load_data(f"fashion-mnist:{data_root / 'fashion-mnist'}", "train")
    test = load_data(f"fashion-mnist:{data_root / 'fashion-mnist'}", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.classes[0] == "T-shirt/top" and train.classes[-1] == "Ankle boot"
    assert (train.channels, train.image_size) == (1, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    pixels = train.images[:10000].double() / 255
    assert abs(pixels.mean().item() - train.mean[0]) < 0.01
    assert abs(pixels.std().item() - train.std[0]) < 0.01


def test_digits_split_is_fixed_and_stats_come_from_train():
    train, test = load_data("digits", "train"), load_data("DIGITS", "test")
    assert (len(train), len(test)) == (1438, 359)
    assert (train.image_size, train.channels, train.augment) == (8, 1, "crop")
    assert train.classes == [str(i) for i in range(10)]
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    a_train, a_test = digits_split(1797)
    b_train, b_test = digits_split(1797)
    assert torch.equal(a_train, b_train) and torch.equal(a_test, b_test)
    assert not set(a_train.tolist()) & set(a_test.tolist())
    pixels = train.images.double() / 255
    assert train.mean[0] == pytest.approx(pixels.mean().item())
    assert train.std[0] == pytest.approx(pixels.std(unbiased=False).item())
    assert test.mean == train.mean


# -- specs -----------------------------------------------------------------


def test_parse_data_spec():
    assert parse_data_spec("digits") == ("digits", None, {})
    assert parse_data_spec("cifar10:/a/b:c") == ("cifar10", "/a/b:c", {})
    name, path, options = parse_data_spec("imagefolder:/x?size=64&channels=1&verify=0")
    assert (name, path, options) == (
        "imagefolder",
        "/x",
        {"size": 64, "channels": 1, "verify": False},
    )
    assert parse_data_spec("mnist:/m?augment=none")[2] == {"augment": "none"}
    assert set(DATASETS) >= {"cifar10", "cifar100", "fashion-mnist", "mnist", "tiny-imagenet"}


@pytest.mark.parametrize(
    "spec, match",
    [
        ("imagenet:/x", "unknown data set 'imagenet'.*cifar10, cifar100"),
        ("cifar10:/x?size=3", "bad option 'size=3'.*augment"),
        ("imagefolder:/x?size=big", "size='big'.*positive integer"),
        ("imagefolder:/x?channels=2", r"channels='2'.*one of \(1, 3\)"),
        ("imagefolder:/x?verify=maybe", "verify='maybe'"),
        ("digits?augment=twirl", "augment='twirl'"),
        ("", "non-empty"),
    ],
)
def test_parse_data_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_data_spec(spec)


def test_load_data_path_errors(tmp_path):
    with pytest.raises(ValueError, match="cifar10 needs a path.*cifar-10-batches-py"):
        load_data("cifar10", "train")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope'}: no such folder.*IDX|idx"):
        load_data(f"mnist:{tmp_path / 'nope'}", "train")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no cifar10 files"):
        load_data(f"cifar10:{tmp_path}", "train")
    with pytest.raises(ValueError, match="takes no path"):
        load_data(f"digits:{tmp_path}", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_data("digits", "val")


def test_augment_option_overrides_default(tmp_path):
    ds = load_data(f"cifar10:{cifar10_folder(tmp_path)}?augment=crop", "test")
    assert ds.augment == "crop" and ds.subset([0]).augment == "crop"


# -- CIFAR fixtures and errors ---------------------------------------------


def test_cifar10_fixture_round_trip(tmp_path):
    folder = cifar10_folder(tmp_path, n=4)
    train = load_data(f"cifar10:{tmp_path}", "train")
    assert len(train) == 20 and train.source == str(folder)
    raw = pickle.loads((folder / "data_batch_2").read_bytes())
    images, labels = train.get_batch(torch.arange(4, 8))
    assert torch.equal(images.reshape(4, -1), torch.from_numpy(raw[b"data"]))
    assert labels.tolist() == raw[b"labels"]


def test_cifar100_fixture(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class{i}".encode() for i in range(100)]
    write_pickle(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": []})
    rng = np.random.default_rng(1)
    for split, n in (("train", 7), ("test", 3)):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": [99, *range(n - 1)],
            b"coarse_labels": [0] * n,
        }
        write_pickle(folder / split, batch)
    train = load_data(f"cifar100:{tmp_path}", "train")
    test = load_data(f"cifar100:{folder}", "test")
    assert (len(train), len(test), train.num_classes) == (7, 3, 100)
    assert train.classes[99] == "class99" and int(train.labels[0]) == 99
    assert train.mean == (0.5071, 0.4865, 0.4409)


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_batches(tmp_path: Path):
    rng = np.random.default_rng(0)
    good = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
    marker = tmp_path / "pwned"
    return {
        "truncated": (pickle.dumps(good, protocol=4)[:-500], "truncated or corrupt pickle"),
        "garbage": (b"this is not a pickle", "truncated or corrupt pickle"),
        "width": (
            pickle.dumps({**good, b"data": good[b"data"][:, :3000]}, protocol=4),
            "4 x 3000; expected N x 3072",
        ),
        "count": (
            pickle.dumps({**good, b"labels": [0, 1, 2]}, protocol=4),
            "3 labels for 4 images",
        ),
        "range": (pickle.dumps({**good, b"labels": [0, 1, 2, 10]}, protocol=4), r"labels span"),
        "dtype": (
            pickle.dumps({**good, b"data": good[b"data"].astype(np.float32)}, protocol=4),
            "'data' is a float32 array",
        ),
        "no-data": (pickle.dumps({b"labels": [0]}, protocol=4), "'data' is missing"),
        "list": (pickle.dumps([1, 2], protocol=4), "holds a list"),
        "code": (pickle.dumps({"x": _RunsCode(marker)}, protocol=2), r"global (posix|nt)\.system"),
        "eval": (pickle.dumps(eval, protocol=4), "global builtins.eval"),
        "object": (
            pickle.dumps({**good, b"labels": np.array([0, 1, 2, None])}, protocol=4),
            "object dtype",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["truncated", "garbage", "width", "count", "range", "dtype", "no-data", "list", "code"]
    + ["eval", "object"],
)
def test_cifar_bad_batch_names_the_file(tmp_path, case):
    folder = cifar10_folder(tmp_path / "root")
    payload, match = _bad_batches(tmp_path)[case]
    (folder / "data_batch_3").write_bytes(payload)
    with pytest.raises(ValueError, match=match) as info:
        load_data(f"cifar10:{folder}", "train")
    message = str(info.value)
    assert message.startswith(f"{folder / 'data_batch_3'}:") and "\n" not in message
    assert not (tmp_path / "pwned").exists()  # the os.system call never ran
    load_data(f"cifar10:{folder}", "test")  # the other split is unaffected


def test_cifar_refusal_says_nothing_ran(tmp_path):
    folder = cifar10_folder(tmp_path)
    payload = pickle.dumps(_RunsCode(tmp_path / "pwned"), protocol=2)
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(ValueError, match="refused to unpickle.*nothing from it was run"):
        load_data(f"cifar10:{folder}", "test")
    assert not (tmp_path / "pwned").exists()
    pickle.loads(payload)  # the payload is live: plain pickle runs it (a harmless touch)
    assert (tmp_path / "pwned").exists()


def test_cifar_missing_batch(tmp_path):
    folder = cifar10_folder(tmp_path)
    (folder / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['data_batch_4'\]"):
        load_data(f"cifar10:{folder}", "train")


# -- IDX -------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_idx_fixture(tmp_path, compress):
    idx_folder(tmp_path, n=5, compress=compress)
    ds = load_data(f"mnist:{tmp_path}", "train")
    assert (len(ds), ds.channels, ds.image_size, ds.augment) == (5, 1, 28, "crop")
    assert ds.classes == [str(i) for i in range(10)] and ds.mean == (0.1307,)
    assert ds.labels.tolist() == [0, 1, 2, 3, 4]


def test_idx_raw_subfolder(tmp_path):
    idx_folder(tmp_path / "raw")
    assert len(load_data(f"fashion-mnist:{tmp_path}", "test")) == 5


@pytest.mark.parametrize(
    "name, content, match",
    [
        (
            "t10k-images-idx3-ubyte.gz",
            gzip.compress(b"\0\0\x08\x01abcd"),
            "magic number is 00000801",
        ),
        ("t10k-images-idx3-ubyte.gz", gzip.compress(b"\0\0\x08\x03\0\0"), "truncated IDX header"),
        (
            "t10k-images-idx3-ubyte.gz",
            gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 28, 28) + bytes(1000)),
            "payload is 1000 bytes; expected 1568",
        ),
        ("t10k-images-idx3-ubyte.gz", gzip.compress(bytes(4000))[:-30], "corrupt gzip"),
        (
            "t10k-labels-idx1-ubyte.gz",
            gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 4) + bytes(4)),
            "4 labels for the 5 images",
        ),
        (
            "t10k-labels-idx1-ubyte.gz",
            gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + bytes([0, 1, 2, 3, 10])),
            "label 10 found",
        ),
    ],
)
def test_idx_errors_name_the_file(tmp_path, name, content, match):
    idx_folder(tmp_path, n=5)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        load_data(f"fashion-mnist:{tmp_path}", "test")
    assert str(tmp_path / name) in str(info.value)


def test_idx_missing_file(tmp_path):
    idx_folder(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no train-labels-idx1-ubyte"):
        load_data(f"mnist:{tmp_path}", "train")


# -- Tiny ImageNet and image folders ---------------------------------------


def test_tiny_imagenet_layout(tmp_path):
    base = tiny_imagenet(tmp_path)
    train = load_data(f"tiny-imagenet:{tmp_path}", "train")
    test = load_data(f"tiny-imagenet:{base}", "test")  # val/ is the labelled test split
    assert isinstance(train, FolderDataset)
    assert (len(train), len(test), train.image_size, train.augment) == (6, 2, 64, "rrc-flip")
    assert train.classes == ["goldfish", "cat (n02)", "cat (n03)"]  # sorted wnids, unique names
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2] and test.labels.tolist() == [2, 0]
    images, _ = train.get_batch(torch.tensor([0, 2, 4]))
    assert images.shape == (3, 3, 64, 64) and images[:, 0, 0, 0].tolist() == [80, 0, 160]
    small = load_data(f"tiny-imagenet:{base}?size=32", "train")
    assert small.get_batch(torch.tensor([0]))[0].shape == (1, 3, 32, 32)


def test_tiny_imagenet_bad_annotation(tmp_path):
    base = tiny_imagenet(tmp_path)
    notes = base / "val" / "val_annotations.txt"
    notes.write_text(notes.read_text() + "val_9.JPEG\tn01\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=f"{notes}:3: .*val_9.JPEG"):
        load_data(f"tiny-imagenet:{base}", "test")
    with pytest.raises(FileNotFoundError, match="no wnids.txt"):
        load_data(f"tiny-imagenet:{base / 'train'}", "train")


def test_imagefolder(tmp_path):
    image_tree(tmp_path)
    train = load_data(f"imagefolder:{tmp_path}?size=16", "train")
    assert train.classes == ["cat", "dog"] and train.labels.tolist() == [0, 0, 1]
    assert (train.image_size, train.channels, train.mean) == (16, 3, (0.485, 0.456, 0.406))
    images, labels = train.get_batch(torch.tensor([0, 1, 2]))
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.uint8
    assert images[0, :, 8, 8].tolist() == [200, 0, 0]  # PNG is exact, JPEG nearly
    assert (images[2, :, 8, 8] - torch.tensor([0, 0, 200])).abs().max() <= 3
    image, label = train[2]  # map-style access for a torch DataLoader
    assert image.shape == (3, 16, 16) and label == 1
    loader = torch.utils.data.DataLoader(pickle.loads(pickle.dumps(train)), batch_size=2)
    assert [tuple(x.shape) for x, _ in loader] == [(2, 3, 16, 16), (1, 3, 16, 16)]
    gray = load_data(f"imagefolder:{tmp_path}?channels=1", "test")
    assert gray.get_batch(torch.tensor([0]))[0].shape == (1, 1, 224, 224)
    assert gray.mean == (0.449,)


def test_imagefolder_prefers_test_over_val(tmp_path):
    image_tree(tmp_path)
    save_image(tmp_path / "test" / "dog" / "z.png")
    assert load_data(f"imagefolder:{tmp_path}", "test").labels.tolist() == [1]


def test_decode_resizes_shorter_side_and_centre_crops(tmp_path):
    array = np.zeros((64, 96, 3), dtype=np.uint8)  # 96 wide: 16 columns cropped each side
    array[:, :16] = (255, 0, 0)
    array[:, 16:80] = (0, 255, 0)
    array[:, 80:] = (0, 0, 255)
    Image.fromarray(array).save(tmp_path / "wide.png")
    ds = FolderDataset(
        [tmp_path / "wide.png"],
        torch.tensor([0]),
        image_size=64,
        classes=["a"],
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        augment="none",
        name="t",
        source="t",
    )
    image = ds.get_batch(torch.tensor([0]))[0][0]
    assert (image[1] == 255).all() and (image[0] == 0).all()
    ds32 = FolderDataset([tmp_path / "wide.png"], torch.tensor([0]), image_size=32, **ds._meta())
    image = ds32.get_batch(torch.tensor([0]))[0][0]
    # Halved: the antialiasing filter blends the outermost columns with red / blue.
    assert image.shape == (3, 32, 32) and (image[1, :, 1:-1] == 255).all()


def test_imagefolder_ignores_stray_files(tmp_path):
    """As torchvision's ImageFolder: only files with an image extension count."""
    image_tree(tmp_path)
    before = load_data(f"imagefolder:{tmp_path}", "train").paths
    for name in ("notes.txt", "Thumbs.db", ".DS_Store", "README"):
        (tmp_path / "train" / "cat" / name).write_text("hello")
    (tmp_path / "train" / "cat" / "desktop.ini").write_bytes(b"\xff\xfe")
    after = load_data(f"imagefolder:{tmp_path}", "train")
    assert after.paths == before and after.labels.tolist() == [0, 0, 1]
    (tmp_path / "val" / "cow").mkdir()  # a class folder of stray files only
    (tmp_path / "train" / "cow").mkdir()
    (tmp_path / "train" / "cow" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="cow: class folder holds no images; expected files"):
        load_data(f"imagefolder:{tmp_path}", "train")


def test_imagefolder_corrupt_image_fails_at_load(tmp_path):
    image_tree(tmp_path)
    bad = tmp_path / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    with pytest.raises(ValueError, match=f"{bad}: not an image"):
        load_data(f"imagefolder:{tmp_path}", "train")
    lazy = load_data(f"imagefolder:{tmp_path}?verify=0", "train")  # found when decoded
    with pytest.raises(ValueError, match=f"{bad}: not a readable image"):
        lazy.get_batch(torch.arange(len(lazy)))


def test_imagefolder_truncated_image_fails_when_decoded(tmp_path):
    image_tree(tmp_path)
    bad = tmp_path / "val" / "dog" / "cut.png"
    save_image(bad, (64, 64), (1, 2, 3))
    bad.write_bytes(bad.read_bytes()[:60])
    ds = load_data(f"imagefolder:{tmp_path}", "test")  # the header alone is fine
    with pytest.raises(ValueError, match=f"{bad}: not a readable image"):
        ds.get_batch(torch.arange(len(ds)))


def test_imagefolder_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train: no such folder.*train/<class>"):
        load_data(f"imagefolder:{tmp_path}", "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="train: no class folders"):
        load_data(f"imagefolder:{tmp_path}", "train")
    (tmp_path / "train" / "cat").mkdir()
    with pytest.raises(ValueError, match="cat: class folder holds no images"):
        load_data(f"imagefolder:{tmp_path}", "train")
    save_image(tmp_path / "train" / "cat" / "a.png")
    save_image(tmp_path / "val" / "cow" / "a.png")
    with pytest.raises(ValueError, match=r"classes \['cow'\] are not in"):
        load_data(f"imagefolder:{tmp_path}", "test")


# -- data set types and splits ---------------------------------------------


def _tiny_memory_dataset(n: int = 10) -> InMemoryDataset:
    images = torch.arange(n * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8)
    return InMemoryDataset(
        images.reshape(n, 3, 4, 4),
        torch.arange(n) % 2,
        classes=["a", "b"],
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        augment="none",
        name="toy",
        source="memory",
    )


def test_in_memory_batch_and_subset():
    ds = _tiny_memory_dataset()
    images, labels = ds.get_batch(torch.tensor([3, -1]))
    assert torch.equal(images, ds.images[[3, 9]]) and labels.tolist() == [1, 1]
    sub = ds.subset(torch.tensor([2, 5, 7]))
    assert isinstance(sub, ImageDataset) and len(sub) == 3
    assert (sub.classes, sub.mean, sub.name, sub.augment) == (ds.classes, ds.mean, "toy", "none")
    assert torch.equal(sub.get_batch(torch.tensor([1]))[0], ds.images[5:6])
    with pytest.raises(IndexError, match="expected"):
        ds.get_batch(torch.tensor([10]))


def test_dataset_validation():
    with pytest.raises(ValueError, match="labels span"):
        InMemoryDataset(
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
            torch.tensor([0, 2]),
            classes=["a", "b"],
            mean=(0.5,),
            std=(0.5,),
            augment="none",
            name="x",
            source="x",
        )
    with pytest.raises(ValueError, match="uint8"):
        InMemoryDataset(
            torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), **_tiny_memory_dataset()._meta()
        )


def test_train_val_split():
    train, val = train_val_split(100, 0.1, seed=3)
    assert (len(train), len(val)) == (90, 10)
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(100))
    assert torch.equal(train, train.sort().values) and train.dtype == torch.int64
    again = train_val_split(100, 10, seed=3)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)
    assert not torch.equal(train_val_split(100, 10, seed=4)[1], val)
    assert len(train_val_split(5, 0)[1]) == 0


@pytest.mark.parametrize("n, val", [(10, 10), (10, -1), (10, 1.0), (10, -0.1), (0, 0)])
def test_train_val_split_bounds(n, val):
    with pytest.raises(ValueError):
        train_val_split(n, val, seed=0)


def test_train_val_split_types():
    with pytest.raises(TypeError):
        train_val_split(10, True, seed=0)


# -- downloads (no network: local streams and file:// URLs) ----------------


def _remote(path: Path, **overrides) -> dl.Remote:
    data = path.read_bytes()
    fields = {
        "url": path.as_uri(),
        "md5": hashlib.md5(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return dl.Remote(**{**fields, **overrides})


def test_fetch_verified_with_injected_opener(tmp_path):
    payload = os.urandom(3 * dl.CHUNK + 17)
    source = tmp_path / "file.bin"
    source.write_bytes(payload)
    (tmp_path / "out").mkdir()
    calls = []
    dest = dl.fetch_verified(
        _remote(source, url="https://example.invalid/file.bin"),
        tmp_path / "out" / "file.bin",
        urlopen=lambda url: io.BytesIO(payload),
        progress=lambda done, total: calls.append(done),
    )
    assert dest.read_bytes() == payload and calls[-1] == len(payload) and len(calls) == 4
    assert os.listdir(tmp_path / "out") == ["file.bin"]


def test_fetch_verified_rejects_a_corrupt_download(tmp_path):
    source = tmp_path / "file.bin"
    source.write_bytes(b"the real bytes")
    remote = _remote(source)
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="sha256 .* != the published .*nothing was kept"):
        dl.fetch_verified(
            dl.Remote(remote.url, md5=None, sha256=remote.sha256),
            tmp_path / "out" / "file.bin",
            urlopen=lambda url: io.BytesIO(b"the fake bytes"),
        )
    with pytest.raises(ValueError, match="md5"):
        dl.fetch_verified(
            remote, tmp_path / "out" / "file.bin", urlopen=lambda url: io.BytesIO(b"x")
        )
    assert os.listdir(tmp_path / "out") == []


def test_fetch_network_error_names_the_url(tmp_path):
    def fail(url):
        raise ConnectionResetError("peer went away")

    with pytest.raises(OSError, match="https://example.invalid/x: download failed"):
        dl.fetch_verified(
            dl.Remote("https://example.invalid/x", md5="0"), tmp_path / "x", urlopen=fail
        )
    assert os.listdir(tmp_path) == []


def _cifar_archive(tmp_path: Path) -> Path:
    cifar10_folder(tmp_path / "src", n=2)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive


def test_download_cifar10_from_a_file_url(tmp_path, monkeypatch):
    archive = _cifar_archive(tmp_path)
    source = dl.Source("cifar-10-batches-py", (_remote(archive),), archive=True)
    monkeypatch.setitem(dl.SOURCES, "cifar10", source)
    root = tmp_path / "data"
    folder = download_dataset("cifar10", root)
    assert folder == root / "cifar-10-batches-py" and os.listdir(root) == [folder.name]
    assert len(load_data(f"cifar10:{folder}", "train")) == 10

    def no_network(url):
        raise AssertionError("an existing folder must not be fetched again")

    assert download_dataset("cifar10", root, urlopen=no_network) == folder


def test_download_corrupt_archive_leaves_nothing(tmp_path, monkeypatch):
    archive = _cifar_archive(tmp_path)
    remote = _remote(archive, sha256="0" * 64)
    monkeypatch.setitem(dl.SOURCES, "cifar10", dl.Source("cifar-10-batches-py", (remote,), True))
    root = tmp_path / "data"
    with pytest.raises(ValueError, match="sha256 .* != the published 0000"):
        download_dataset("cifar10", root)
    assert os.listdir(root) == []


def test_download_fashion_mnist_files(tmp_path, monkeypatch):
    idx_folder(tmp_path / "src", n=3)
    remotes = tuple(_remote(p) for p in sorted((tmp_path / "src").iterdir()))
    monkeypatch.setitem(dl.SOURCES, "fashion-mnist", dl.Source("fashion-mnist", remotes, False))
    folder = download_dataset("fashion-mnist", tmp_path / "data")
    assert len(load_data(f"fashion-mnist:{folder}", "test")) == 3
    assert sorted(os.listdir(tmp_path / "data")) == ["fashion-mnist"]


def test_download_sources_and_unknown_name(tmp_path):
    assert set(dl.SOURCES) == {"cifar10", "cifar100", "fashion-mnist"}
    assert dl.SOURCES["cifar10"].files[0].url.startswith("https://www.cs.toronto.edu/")
    with pytest.raises(ValueError, match="cannot download 'imagenet'.*cifar10"):
        download_dataset("imagenet", tmp_path)
