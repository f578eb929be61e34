"""Image files to model-sized uint8 tensors, for prediction on arbitrary user files.

Conversion rules (docs/runtime.md):

- Any file Pillow opens is accepted; a multi-frame file (GIF, TIFF) gives its
  first frame, and an EXIF orientation tag is applied (the image is turned
  the way viewers show it).
- Transparency (RGBA, LA, PA, or a palette / grey / RGB image with a
  transparent colour) is composited over a white background: the colour of a
  fully transparent pixel is arbitrary (often black), white is what a viewer
  shows on a page.
- High bit depth grey is scaled to 8 bits: 16-bit (I;16) is divided by 257
  (65535 -> 255); 32-bit integers (I) likewise when a value exceeds 255, else
  taken as they are; floats (F) in [0, 1] are multiplied by 255, others read
  like I. Values outside 0..255 after that are clipped.
- Everything else (1-bit, palette, CMYK, YCbCr, LAB, HSV...) goes through
  Pillow's conversion to RGB; the model's channel count is then RGB (3) or
  luma L = 0.299 R + 0.587 G + 0.114 B (1), as Pillow's convert("L") does.
- Size: the shorter side is resized to S (bilinear, antialiased when
  shrinking: Pillow widens the filter) and the centre S x S is cropped: the
  usual evaluation protocol, and the same geometry as image-folder data sets
  (`ravit.data.base.decode_image`). An S x S image is left untouched.

`read_image` gives a NumPy array and needs no torch (the exported runtime
uses it); `load_image` is the same as a torch tensor.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from ravit.errors import describe_error

if TYPE_CHECKING:
    import torch

# Extensions picked up when a folder is scanned (any case). A file named
# explicitly is always tried, whatever its extension.
IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".webp",
    ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".qoi",
)  # fmt: skip
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def collect_image_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The files to classify, in order: each path as given, each folder expanded.

    A folder contributes its image files (extensions in `IMAGE_EXTENSIONS`,
    any case), recursively, in sorted order; hidden names (".x") and files
    with other extensions inside a folder are skipped silently. A path that is
    not a folder is kept as given, even if it does not exist or has another
    extension: reading it then reports the problem for that file. Repeated
    files are kept once, at their first place.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: dict[Path, None] = {}
    for p in paths:
        p = Path(p)
        for f in _folder_images(p) if p.is_dir() else [p]:
            found.setdefault(f, None)
    return list(found)


def _folder_images(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [
            Path(dirpath) / name
            for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return sorted(out, key=lambda p: p.relative_to(folder).parts)  # a/b/c.png before a/d.png


def load_image(path: str | os.PathLike, channels: int, image_size: int) -> torch.Tensor:
    """One image file as a uint8 tensor (channels, image_size, image_size): `read_image`."""
    import torch

    return torch.from_numpy(read_image(path, channels, image_size))


def read_image(path: str | os.PathLike, channels: int, image_size: int) -> np.ndarray:
    """One image file as uint8 (channels, image_size, image_size), by the rules above.

    Raises FileNotFoundError for a missing file and ValueError, naming the
    file, for anything that is not a complete, readable image.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, not an image")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here
            im = ImageOps.exif_transpose(im)
            im = to_mode(im, "L" if channels == 1 else "RGB")
            im = resize_center_crop(im, image_size)
            array = np.array(im, dtype=np.uint8)  # (S, S) or (S, S, 3), a writable copy
    except Exception as err:  # decoders raise many types on bad input: report them all
        raise ValueError(f"{path}: not a readable image ({describe_error(err)})") from None
    if array.ndim == 2:
        return array[None]
    return np.ascontiguousarray(array.transpose(2, 0, 1))  # (S, S, C) -> (C, S, S)


def to_mode(im: Image.Image, mode: str) -> Image.Image:
    """An image of any Pillow mode as 8-bit "RGB" or "L" (rules in the module docstring)."""
    if im.mode in _HIGH_DEPTH_MODES:
        im = Image.fromarray(_to_uint8(np.asarray(im), im.mode))  # mode "L"
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA") if im.mode != "La" else im.convert("LA").convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    if im.mode not in ("L", "RGB"):
        im = im.convert("L" if im.mode == "1" else "RGB")
    return im if im.mode == mode else im.convert(mode)


def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """High bit depth grey to 0..255 (I;16: / 257; I: / 257 if above 255; F: x 255 if in [0, 1])."""
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(a.max()) if a.size else 0.0
    if mode == "F" and top <= 1.0:
        a = a * 255.0
    elif mode.startswith("I;16") or top > 255.0:
        a = a / 257.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size` (bilinear, antialiased when shrinking), then the centre square."""
    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    im = im.resize(new, Image.Resampling.BILINEAR)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return im.crop((left, top, left + size, top + size))
