"""Image-file data sets: Tiny ImageNet's own layout and a class-per-folder tree.

Both are read lazily (`FolderDataset`): listing the files is cheap, and each
batch is decoded when asked for, so 100k Tiny ImageNet images cost no memory
up front. Only files with an image extension are listed (stray files such as
``notes.txt`` or ``Thumbs.db`` are ignored, as torchvision's ImageFolder does),
and (unless ``verify=False``) each one's header must be one Pillow recognises,
so a bad file fails at load with its name, not in the middle of an epoch.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ravit.data.base import FolderDataset, bad_images_message, find_bad_images

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# One channel: the mean of ImageNet's three channel statistics.
IMAGENET_GRAY_STATS = ((0.449,), (0.226,))
TINY_FOLDER = "tiny-imagenet-200"


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, in sorted order.

    As torchvision's ImageFolder does, only files with an image extension
    (case-insensitive) count: a stray ``notes.txt``, ``Thumbs.db`` or
    ``.DS_Store`` is not part of the data set. Names starting with "." are
    skipped whatever their extension.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS:
                found.append(path)
    return found


def _no_images(folder: Path) -> ValueError:
    return ValueError(
        f"{folder}: class folder holds no images; expected files with the extensions "
        f"{', '.join(IMAGE_EXTENSIONS)} (any case)"
    )


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the class sub-folders of `folder` (at least one)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder; expected one sub-folder per class")
    names = sorted(e.name for e in os.scandir(folder) if e.is_dir() and e.name[0] != ".")
    if not names:
        raise ValueError(f"{folder}: no class folders; expected one sub-folder per class")
    return names


def screen(
    paths: list[Path], labels: list[int], verify: bool, skip_bad: bool
) -> tuple[list[Path], list[int], list[str]]:
    """Check every file's header (`verify`): refuse naming every bad one, or drop them.

    Returns the kept paths and labels and the dropped files as "path: reason".
    """
    if not verify:
        return paths, labels, []
    bad = find_bad_images(paths)
    if not bad:
        return paths, labels, []
    reasons = list(bad.values())
    kept = [(p, y) for p, y in zip(paths, labels) if str(p) not in bad]
    if not skip_bad or not kept:
        raise ValueError(bad_images_message(reasons, len(paths)))
    return [p for p, _ in kept], [y for _, y in kept], reasons


def read_imagefolder(
    root: str | Path,
    split: str,
    *,
    size: int = 224,
    channels: int = 3,
    verify: bool = True,
    skip_bad: bool = False,
) -> FolderDataset:
    """`root/train/<class>/*` for "train"; `root/test/<class>/*` (or `val/`) for "test".

    Classes (and their label order) come from `train/`, so both splits agree;
    a test class absent from `train/` is an error. Files whose header does not
    read are refused, all named; `skip_bad` leaves them out instead (listed in
    the data set's `dropped`), and leaves out files that fail to decode later.
    """
    root = Path(root)
    split_dir = root / "train"
    if split == "test":
        split_dir = root / "test" if (root / "test").is_dir() else root / "val"
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"{split_dir}: no such folder; imagefolder expects {root}/train/<class>/<image> "
            f"and {root}/val/<class>/<image> (or test/)"
        )
    classes = class_folders(root / "train" if (root / "train").is_dir() else split_dir)
    unknown = sorted(set(class_folders(split_dir)) - set(classes))
    if unknown:
        raise ValueError(f"{split_dir}: classes {unknown[:5]} are not in {root / 'train'}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        if not (split_dir / name).is_dir():
            continue
        files = list_images(split_dir / name)
        if not files:
            raise _no_images(split_dir / name)
        paths += files
        labels += [label] * len(files)
    paths, labels, dropped = screen(paths, labels, verify, skip_bad)
    mean, std = IMAGENET_STATS if channels == 3 else IMAGENET_GRAY_STATS
    return FolderDataset(
        paths,
        torch.tensor(labels, dtype=torch.int64),
        channels=channels,
        image_size=size,
        skip_bad=skip_bad,
        dropped=dropped,
        classes=classes,
        mean=mean,
        std=std,
        augment="rrc-flip",
        name="imagefolder",
        source=str(split_dir),
    )


def read_tiny_imagenet(
    root: str | Path, split: str, *, size: int = 64, verify: bool = True, skip_bad: bool = False
) -> FolderDataset:
    """Tiny ImageNet (200 classes, 64x64): "train" is train/, "test" is the labelled val/.

    The official test/ folder has no labels, so it is never read.
    """
    base = find_tiny_root(root)
    wnids = read_wnids(base / "wnids.txt")
    if split == "train":
        paths, labels = _tiny_train(base, wnids)
    else:
        paths, labels = _tiny_val(base, wnids)
    paths, labels, dropped = screen(paths, labels, verify, skip_bad)
    return FolderDataset(
        paths,
        torch.tensor(labels, dtype=torch.int64),
        channels=3,
        image_size=size,
        skip_bad=skip_bad,
        dropped=dropped,
        classes=class_names(base / "words.txt", wnids),
        mean=IMAGENET_STATS[0],
        std=IMAGENET_STATS[1],
        augment="rrc-flip",
        name="tiny-imagenet",
        source=str(base / ("train" if split == "train" else "val")),
    )


def find_tiny_root(root: str | Path) -> Path:
    root = Path(root)
    for base in (root / TINY_FOLDER, root):
        if (base / "wnids.txt").is_file():
            return base
    raise FileNotFoundError(
        f"{root}: no wnids.txt; expected Tiny ImageNet's layout ({TINY_FOLDER}/ or its "
        "contents: wnids.txt, train/<wnid>/images/, val/images/, val/val_annotations.txt)"
    )


def read_wnids(path: Path) -> list[str]:
    """The class ids of wnids.txt, sorted (label i is the i-th smallest wnid)."""
    wnids = sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})
    if not wnids:
        raise ValueError(f"{path}: no class ids; expected one WordNet id (e.g. n01443537) a line")
    return wnids


def class_names(words: Path, wnids: list[str]) -> list[str]:
    """The first name words.txt gives each wnid (the wnid when absent), made unique."""
    table = {}
    if words.is_file():
        for line in words.read_text(encoding="utf-8").splitlines():
            wnid, _, text = line.partition("\t")
            table[wnid.strip()] = text.split(",")[0].strip()
    names = [table.get(w) or w for w in wnids]
    repeated = {n for n in names if names.count(n) > 1}
    return [f"{n} ({w})" if n in repeated else n for n, w in zip(names, wnids)]


def _tiny_train(base: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder; expected the images of {wnid}")
        files = list_images(folder)
        if not files:
            raise _no_images(folder)
        paths += files
        labels += [label] * len(files)
    return paths, labels


def _tiny_val(base: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    notes, folder = base / "val" / "val_annotations.txt", base / "val" / "images"
    if not notes.is_file() or not folder.is_dir():
        raise FileNotFoundError(
            f"{base / 'val'}: expected val_annotations.txt and images/ (Tiny ImageNet's val split)"
        )
    index = {w: i for i, w in enumerate(wnids)}
    present = set(os.listdir(folder))
    paths, labels = [], []
    for number, line in enumerate(notes.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index or fields[0] not in present:
            raise ValueError(
                f"{notes}:{number}: {line[:60]!r}; expected 'file<TAB>wnid<TAB>bbox...' with a "
                f"wnid from wnids.txt and the file in {folder}"
            )
        paths.append(folder / fields[0])
        labels.append(index[fields[1]])
    if not paths:
        raise ValueError(f"{notes}: no annotated images")
    return paths, labels
