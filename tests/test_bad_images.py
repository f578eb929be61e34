"""Unreadable images in a training set: refused, all named, or left out with skip_bad=1.

The image folder is made of real CIFAR-10 images (the shared subset) saved as PNG.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ravit.cli import main
from ravit.data import load_data
from ravit.runs.checkpoint import load_checkpoint

PER_CLASS = 12  # 2 classes x 12 = 24 training images: 3 steps of 8


def cifar_folder(data_root: Path, root: Path) -> Path:
    """root/train/<class>/*.png and root/val/<class>/*.png from real CIFAR-10 images."""
    with open(data_root / "cifar10-subset" / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    images = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.array(batch[b"labels"])
    for split, start in (("train", 0), ("val", PER_CLASS)):
        for label, name in ((0, "airplane"), (1, "automobile")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in np.flatnonzero(labels == label)[start : start + PER_CLASS]:
                Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    return root


def damage(root: Path) -> list[Path]:
    """Three files with image extensions that do not read (their headers are bad)."""
    bad = [root / "train" / "airplane" / "broken.jpg", root / "train" / "automobile" / "e.png",
           root / "train" / "automobile" / "notes.png"]  # fmt: skip
    bad[0].write_bytes(b"definitely not a jpeg")
    bad[1].write_bytes(b"")
    bad[2].write_text("a text file with an image extension")
    return bad


def truncate(path: Path) -> None:
    """Keep the header, cut the pixels: passes the header check, fails to decode."""
    path.write_bytes(path.read_bytes()[:80])


def train(root: Path, out: Path, options: str = "", workers: int = 0, epochs: int = 2):
    spec = f"imagefolder:{root}?size=16{options}"
    return main([
        "train", "--preset", "tiny", "--layers", "1-1", "--data", spec, "--epochs", str(epochs),
        "--val-size", "4", "--batch-size", "8", "--workers", str(workers), "--device", "cpu",
        "--no-progress", "--out", str(out),
    ])  # fmt: skip


@pytest.fixture
def folder(data_root, tmp_path) -> Path:
    return cifar_folder(data_root, tmp_path / "images")


def test_bad_files_are_all_named_with_their_count_at_indexing(folder, tmp_path, capsys):
    bad = damage(folder)
    with pytest.raises(ValueError) as info:
        load_data(f"imagefolder:{folder}", "train")
    message = str(info.value)
    assert message.startswith(f"3 of {2 * PER_CLASS + 3} image files do not read: ")
    assert all(f"{p}: not an image (UnidentifiedImageError)" in message for p in bad)
    assert "skip_bad=1" in message and "\n" not in message
    out = tmp_path / "run"
    assert train(folder, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(str(p) in err for p in bad)
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("workers", [0, 1])
def test_skip_bad_leaves_them_out_lists_them_and_says_how_many(folder, tmp_path, capsys, workers):
    bad = damage(folder)
    cut = folder / "train" / "automobile" / sorted(
        p.name for p in (folder / "train" / "automobile").glob("0*.png")
    )[3]  # fmt: skip
    truncate(cut)  # fails in training, not at indexing
    data = load_data(f"imagefolder:{folder}?skip_bad=1", "train")
    assert len(data) == 2 * PER_CLASS and len(data.dropped) == 3
    out = tmp_path / "run"
    assert train(folder, out, "&skip_bad=1", workers=workers) == 0
    stdout = capsys.readouterr().out
    dropped = json.loads((out / "dropped.json").read_text())
    assert dropped["count"] == 4
    assert [x.split(": ")[0] for x in dropped["indexing"]] == [str(p) for p in bad]
    assert [(r["epoch"], r["file"].split(": ")[0]) for r in dropped["training"]] == [(1, str(cut))]
    assert "not a readable image" in dropped["training"][0]["file"]
    assert f"4 unreadable image files left out (skip_bad=1): listed in {out}/dropped.json" in stdout
    assert "(4 unreadable files left out)" in stdout  # on the epoch lines too


@pytest.mark.parametrize("workers", [0, 1])
def test_a_file_that_breaks_after_indexing_stops_resumably_naming_it(
    folder, tmp_path, capsys, workers
):
    """Default policy in training: one line naming the file, a checkpoint at the step
    boundary, and a resume once the file is fixed, never a silently shortened epoch."""
    victim = sorted((folder / "train" / "automobile").glob("*.png"))[-1]
    good = victim.read_bytes()
    truncate(victim)
    out = tmp_path / "run"
    assert train(folder, out, workers=workers) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{victim}: not a readable image" in err
    assert "training stopped in epoch 1 after step" in err and "resume" in err
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 0 and "step" in state
    victim.write_bytes(good)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert not (out / "dropped.json").exists()


def test_skip_bad_with_every_file_bad_is_refused(folder):
    for p in (folder / "train").rglob("*.png"):
        p.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{2 * PER_CLASS} of {2 * PER_CLASS} image files"):
        load_data(f"imagefolder:{folder}?skip_bad=1", "train")  # nothing would be left
