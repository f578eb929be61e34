"""Starting from a ViT: Hugging Face and timm checkpoints load exactly, odd ones are refused
with one line, and a converted RAViT is a run folder the other commands take."""

from __future__ import annotations

import json

import pytest
import torch

from ravit.cli import main
from ravit.convert import assign_blocks, ravit_config, ravit_from_vit, read_vit, vit_model
from ravit.convert.vit import resample_pos_embed
from ravit.data import load_data, make_transform

transformers = pytest.importorskip("transformers")

HF = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
          image_size=32, patch_size=4, num_channels=3, num_labels=10)  # fmt: skip


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    """A randomly initialised Hugging Face ViTForImageClassification, saved with save_pretrained."""
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(**HF)).eval()
    folder = tmp_path_factory.mktemp("hf") / "vit"
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def cifar_images(data_root):
    """64 real CIFAR-10 test images, normalised as evaluation does."""
    data = load_data("cifar10:" + str(data_root / "cifar10-subset"), "test")
    images, _ = data.get_batch(torch.arange(64))
    tf = make_transform(False, augment="none", image_size=32, channels=3, mean=data.mean,
                        std=data.std)  # fmt: skip
    return tf(images)


def hf_logits(model, x):
    with torch.no_grad():
        return model(pixel_values=x).logits


def ravit_logits(model, x):
    with torch.no_grad():
        return model(x).logits[-1]


def timm_state(folder) -> dict[str, torch.Tensor]:
    """A saved Hugging Face ViT's weights (the hub's key names) in timm's layout, mapped here
    independently."""
    from safetensors.torch import load_file

    s = load_file(str(folder / "model.safetensors"))
    out = {
        "cls_token": s["vit.embeddings.cls_token"],
        "pos_embed": s["vit.embeddings.position_embeddings"],
        "patch_embed.proj.weight": s["vit.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": s["vit.embeddings.patch_embeddings.projection.bias"],
        "norm.weight": s["vit.layernorm.weight"],
        "norm.bias": s["vit.layernorm.bias"],
        "head.weight": s["classifier.weight"],
        "head.bias": s["classifier.bias"],
    }
    for i in range(HF["num_hidden_layers"]):
        hf_block, block = f"vit.encoder.layer.{i}.", f"blocks.{i}."
        att = hf_block + "attention.attention."
        for p in ("weight", "bias"):
            out[block + f"attn.qkv.{p}"] = torch.cat([s[att + f"{n}.{p}"] for n in
                                                      ("query", "key", "value")])  # fmt: skip
            for ours, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                                 ("attn.proj", "attention.output.dense"),
                                 ("mlp.fc1", "intermediate.dense"),
                                 ("mlp.fc2", "output.dense")):  # fmt: skip
                out[block + f"{ours}.{p}"] = s[hf_block + f"{theirs}.{p}"]
    return out


def test_a_hugging_face_vit_loads_exactly(hf_vit, cifar_images):
    hf, folder = hf_vit
    ckpt = read_vit(folder)
    s = ckpt.spec
    assert (s.embed_dim, s.depth, s.num_heads, s.mlp_dim) == (64, 4, 4, 128)
    assert (s.image_size, s.patch_size, s.num_classes, s.layer_norm_eps) == (32, 4, 10, 1e-12)
    model, notes = vit_model(ckpt)
    assert model.cfg.layers == "0-4" and notes == []
    diff = (hf_logits(hf, cifar_images) - ravit_logits(model, cifar_images)).abs().max()
    assert diff < 1e-5


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_a_timm_layout_checkpoint_loads_exactly(hf_vit, cifar_images, tmp_path, suffix):
    hf, _ = hf_vit
    path = tmp_path / f"vit{suffix}"
    state = timm_state(hf_vit[1])
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)  # wrapped, as training scripts save them
    ckpt = read_vit(path, num_heads=4, layer_norm_eps=1e-12)
    model, _ = vit_model(ckpt)
    diff = (hf_logits(hf, cifar_images) - ravit_logits(model, cifar_images)).abs().max()
    assert diff < 1e-5
    assert read_vit(path).spec.num_heads == 1  # no shape tells the heads: D / 64 by default


def test_a_vit_model_without_classifier_takes_the_classes_given(tmp_path):
    torch.manual_seed(0)
    base = transformers.ViTModel(transformers.ViTConfig(**HF)).eval()
    base.save_pretrained(tmp_path / "base")
    ckpt = read_vit(tmp_path / "base")
    assert ckpt.spec.num_classes is None
    assert any("pooler" in n for n in ckpt.notes)
    with pytest.raises(ValueError, match="no classifier head"):
        vit_model(ckpt)
    model, notes = vit_model(ckpt, num_classes=7)
    assert model.cfg.num_classes == 7 and any("re-initialised" in n for n in notes)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.update({"blocks.0.ls1.gamma": torch.ones(64)}),
         "'blocks.0.ls1.gamma'.*LayerScale"),
        (lambda s: s.update({"reg_token": torch.zeros(1, 4, 64)}), "'reg_token'.*register tokens"),
        (lambda s: s.update({"blocks.1.attn.q_norm.weight": torch.ones(16)}), "qk-norm"),
        (lambda s: s.update({"fc_norm.weight": torch.ones(64)}), "average pooling"),
        (lambda s: s.pop("blocks.2.mlp.fc2.bias"), "missing 'blocks.2.mlp.fc2.bias'"),
        (lambda s: s.update({"blocks.0.mlp.extra": torch.ones(3)}),
         "unsupported key 'blocks.0.mlp.extra'"),
    ],
)  # fmt: skip
def test_variants_it_is_not_are_refused_naming_the_key(hf_vit, tmp_path, edit, message):
    state = timm_state(hf_vit[1])
    edit(state)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=message):
        read_vit(tmp_path / "odd.pth")


def test_unsafe_and_foreign_files_are_refused(tmp_path, hf_vit):
    import pickle

    (tmp_path / "code.pth").write_bytes(pickle.dumps({"x": torch.nn.Linear(2, 2)}, protocol=2))
    with pytest.raises(ValueError, match="without running code"):
        read_vit(tmp_path / "code.pth")
    (tmp_path / "vit.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown checkpoint type '.onnx'"):
        read_vit(tmp_path / "vit.onnx")
    folder = tmp_path / "deit"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "deit"}))
    with pytest.raises(ValueError, match="model_type 'deit' is not a plain ViT"):
        read_vit(folder)
    assert main(["convert", str(folder), "--layers", "1-3", "--data", "digits",
                 "--out", str(tmp_path / "run")]) == 2  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_block_assignment_rules():
    assert assign_blocks(4, [1, 3], "first") == [[0], [1, 2, 3]]
    assert assign_blocks(12, [1, 1, 8], "first") == [[0], [1], [2, 3, 4, 5, 6, 7, 8, 9]]
    assert assign_blocks(12, [1, 1, 8], "last") == [[0], [1], [4, 5, 6, 7, 8, 9, 10, 11]]
    assert assign_blocks(12, [1, 3], "spread") == [[0], [4, 7, 11]]
    assert assign_blocks(4, [1, 3], "prefix") == [[0], [0, 1, 2]]
    assert assign_blocks(12, [1, 1, 8], "prefix") == [[0], [0], list(range(8))]
    assert assign_blocks(4, [2, 3], "prefix") == [[0, 1], [0, 1, 2]]  # copies: 5 from 4
    with pytest.raises(ValueError, match="need 5 blocks; the ViT has 4"):
        assign_blocks(4, [2, 3], "first")
    with pytest.raises(ValueError, match="a branch of 5 layers needs 5 blocks; the ViT has 4"):
        assign_blocks(4, [1, 5], "prefix")


def test_position_embeddings_resample_as_timm_does():
    pos = torch.randn(1, 1 + 64, 8)
    assert torch.equal(resample_pos_embed(pos, 8), pos)
    small = resample_pos_embed(pos, 4)
    assert small.shape == (1, 17, 8) and torch.equal(small[:, 0], pos[:, 0])
    grid = pos[:, 1:].reshape(1, 8, 8, 8).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bicubic", antialias=True)
    assert torch.allclose(small[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 16, 8))


def test_a_converted_ravit_keeps_the_vit_path_of_its_last_branch(hf_vit, cifar_images):
    ckpt = read_vit(hf_vit[1])
    model, _ = ravit_from_vit(ckpt, ravit_config(ckpt, "1-3"), "first")
    assert model.cfg.layers == "1-3" and model.resolutions == [16, 32]
    assert torch.equal(model.branches[0].blocks[0].attn.qkv.weight,
                       ckpt.state["blocks.0.attn.qkv.weight"])  # fmt: skip
    assert torch.equal(model.heads[1].fc.weight, ckpt.state["head.weight"])
    assert torch.equal(model.cls_token, ckpt.state["cls_token"][0])


def test_convert_writes_a_run_that_eval_predict_and_train_init_take(hf_vit, data_root, tmp_path,
                                                                   capsys):  # fmt: skip
    from PIL import Image

    data = "cifar10:" + str(data_root / "cifar10-subset")
    run = tmp_path / "ravit"
    args = ["convert", str(hf_vit[1]), "--layers", "1-3", "--data", data, "--out", str(run),
            "--val-size", "200", "--rule", "last"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ViT blocks [1, 2, 3]" in out and "ravit train --init" in out
    assert main(args) == 2 and "already holds a run" in capsys.readouterr().err
    assert main(["eval", str(run), "--split", "val", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["exits"]) == 2
    Image.new("RGB", (32, 32), (90, 120, 200)).save(tmp_path / "x.png")
    assert main(["predict", str(run), str(tmp_path / "x.png")]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    assert "starting point" in capsys.readouterr().err
    tuned = tmp_path / "tuned"
    assert main(["train", "--init", str(run), "--out", str(tuned), "--epochs", "1",
                 "--no-progress", "train.batch_size=128", "data.train_size=256"]) == 0  # fmt: skip
    capsys.readouterr()
    from ravit.runs import load_run_model, read_config

    sections, _ = read_config(tuned)
    assert sections["train"]["init"] == str(run) and sections["model"]["layers"] == "1-3"
    before, _ = load_run_model(run)
    after, _ = load_run_model(tuned)
    assert after.cfg == before.cfg
    moved = (after.heads[1].fc.weight - before.heads[1].fc.weight).abs().max()
    assert 0 < moved < 0.1  # fine-tuned from the converted weights, not from scratch


def test_an_in_memory_state_dict_of_transformers_loads_too(hf_vit, cifar_images, tmp_path):
    hf, _ = hf_vit
    torch.save(hf.state_dict(), tmp_path / "hf_state.pth")  # transformers' own module names
    model, _ = vit_model(read_vit(tmp_path / "hf_state.pth", num_heads=4, layer_norm_eps=1e-12))
    diff = (hf_logits(hf, cifar_images) - ravit_logits(model, cifar_images)).abs().max()
    assert diff < 1e-5
