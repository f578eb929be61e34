"""Batched image transforms in plain torch, on whatever device the batch is on.

Every function takes a (B, C, H, W) batch: uint8 (0..255) or floating point
(0..1). The geometric ones return the dtype they were given (resampled uint8
is rounded and clamped); `normalize` returns float32. Random parameters are
drawn per image from `generator`, a CPU `torch.Generator` (None: torch's
global one), then moved to the batch's device: the same generator state gives
the same result on every device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ravit.data.base import AUGMENTATIONS

# ITU-R 601-2 luma, the weights Pillow's convert("L") uses.
LUMA = (0.299, 0.587, 0.114)
Tensor = torch.Tensor


def _check(x: Tensor) -> Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected an image batch (B, C, H, W), got {shape}")
    return x


def _restore(y: Tensor, like: Tensor) -> Tensor:
    """Float result `y` back to the dtype of the input `like`."""
    if like.dtype == torch.uint8:
        return y.round_().clamp_(0, 255).to(torch.uint8)
    return y.to(like.dtype)


def crop(x: Tensor, top: Tensor | int, left: Tensor | int, size: int) -> Tensor:
    """Per-image size x size windows at (top, left): ints, or (B,) tensors."""
    _check(x)
    b, _, h, w = x.shape
    top = torch.as_tensor(top, dtype=torch.int64).expand(b)
    left = torch.as_tensor(left, dtype=torch.int64).expand(b)
    if b and (top.min() < 0 or left.min() < 0 or top.max() > h - size or left.max() > w - size):
        raise ValueError(f"crop windows of {size} px must lie inside the {h}x{w} images")
    return _gather(x, top, left, size)


def _gather(x: Tensor, top: Tensor, left: Tensor, size: int) -> Tensor:
    """Windows at per-image offsets with one gather: no loop over images."""
    b, c, _, w = x.shape
    steps = torch.arange(size, device=x.device)
    rows = top.to(x.device)[:, None] + steps  # (B, size)
    cols = left.to(x.device)[:, None] + steps  # (B, size)
    flat = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, size * size)  # (B, 1, size^2)
    out = x.contiguous().view(b, c, -1).gather(2, flat.expand(b, c, -1))  # (B, C, size^2)
    return out.view(b, c, size, size)


def random_crop(
    x: Tensor, size: int, padding: int = 0, generator: torch.Generator | None = None
) -> Tensor:
    """Zero-pad each side by `padding`, then a size x size window at a random offset per image."""
    _check(x)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding:
        x = F.pad(x, (padding,) * 4)
    b, _, h, w = x.shape
    if size > h or size > w:
        raise ValueError(f"crop size {size} exceeds the padded {h}x{w} images")
    top = torch.randint(0, h - size + 1, (b,), generator=generator)
    left = torch.randint(0, w - size + 1, (b,), generator=generator)
    return _gather(x, top, left, size)


def random_flip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability p."""
    _check(x)
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_resized_crop(
    x: Tensor,
    size: int,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """Inception-style crop (area fraction in `scale`, aspect in `ratio`) resized to size.

    Boxes are drawn as torchvision draws them (10 tries per image, then a
    central crop), all images at once; the crops are resampled bilinearly in
    one grid_sample over the whole image (no antialiasing: a crop much larger
    than `size` aliases; when enlarging, the box's outer half pixel blends with
    its neighbours outside the box, where crop-then-resize would clamp).
    """
    _check(x)
    b, _, h, w = x.shape
    top, left, ch, cw = _rrc_boxes(b, h, w, scale, ratio, generator)
    # Output pixel centre u in [-1, 1] maps to x = a u + c (align_corners=False).
    theta = torch.zeros(b, 2, 3, dtype=torch.float32)
    theta[:, 0, 0] = cw / w
    theta[:, 0, 2] = (2 * left + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * top + ch) / h - 1
    grid = F.affine_grid(theta.to(x.device), [b, 1, size, size], align_corners=False)
    source = x.float() if x.dtype == torch.uint8 else x
    grid = grid.to(source.dtype)
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _restore(out, x)


def _rrc_boxes(
    b: int,
    h: int,
    w: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None,
    tries: int = 10,
) -> tuple[Tensor, ...]:
    """(top, left, height, width) float tensors (B,) of whole-pixel boxes."""
    area = torch.empty(b, tries).uniform_(scale[0], scale[1], generator=generator) * (h * w)
    log_r = torch.empty(b, tries).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    cw = torch.sqrt(area * log_r.exp()).round()
    ch = torch.sqrt(area / log_r.exp()).round()
    ok = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # first valid try
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    # No valid try: the largest central crop with an aspect ratio inside `ratio`.
    aspect = w / h
    fw = float(w if aspect <= ratio[1] else round(h * ratio[1]))
    fh = float(h if aspect >= ratio[0] else round(w / ratio[0]))
    found = ok.any(dim=1)
    cw, ch = torch.where(found, cw, fw), torch.where(found, ch, fh)
    u = torch.rand(b, 2, generator=generator)
    top = torch.where(found, (u[:, 0] * (h - ch + 1)).floor(), (h - ch) // 2)
    left = torch.where(found, (u[:, 1] * (w - cw + 1)).floor(), (w - cw) // 2)
    return top, left, ch, cw


def resize(x: Tensor, size: int) -> Tensor:
    """Antialiased bilinear resize to size x size (a no-op at that size already)."""
    _check(x)
    if tuple(x.shape[-2:]) == (size, size):
        return x
    source = x.float() if x.dtype == torch.uint8 else x
    out = F.interpolate(source, (size, size), mode="bilinear", align_corners=False, antialias=True)
    return _restore(out, x)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """float32 (x - mean) / std per channel; uint8 is first divided by 255.

    mean/std hold one value per channel, or one value for all channels.
    """
    _check(x)
    c = x.shape[1]
    if len(mean) not in (1, c) or len(std) not in (1, c) or min(std) <= 0:
        raise ValueError(
            f"mean {tuple(mean)} / std {tuple(std)}: expected 1 or {c} values each, std > 0"
        )
    y = x.to(torch.float32)
    if x.dtype == torch.uint8:
        y = y / 255.0
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (y - m) / s


def match_channels(x: Tensor, channels: int) -> Tensor:
    """1 -> 3 repeats grey; 3 -> 1 takes the luma; 4 -> 3 (or 1) drops alpha first."""
    _check(x)
    if x.shape[1] == 4 and channels != 4:
        x = x[:, :3]
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.repeat(1, 3, 1, 1)
    if c == 3 and channels == 1:
        weights = torch.tensor(LUMA, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return _restore((x.float() * weights).sum(1, keepdim=True), x)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


@dataclass(frozen=True)
class BatchTransform:
    """``(uint8 or [0, 1] float batch, generator=None) -> float32 (B, channels, S, S)``.

    Eval: match channels, resize to image_size if needed, normalise. Train:
    the augmentation at image_size (images of another size are resized first,
    except for "rrc-flip", which crops the original), then normalise.
    """

    train: bool
    augment: str
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check(x)
        if x.shape[1] > self.channels:  # fewer channels first: less work below
            x = match_channels(x, self.channels)
        x = self._augment(x, generator) if self.train else resize(x, self.image_size)
        return normalize(match_channels(x, self.channels), self.mean, self.std)

    def _augment(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        size = self.image_size
        if self.augment == "rrc-flip":
            return random_flip(random_resized_crop(x, size, generator), generator)
        x = resize(x, size)
        if self.augment in ("crop-flip", "crop"):
            x = random_crop(x, size, size // 8, generator)
        if self.augment == "crop-flip":
            x = random_flip(x, generator)
        return x


def make_transform(
    train: bool,
    *,
    augment: str = "none",
    image_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> BatchTransform:
    """The train or eval transform producing float32 (B, channels, image_size, image_size)."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if len(mean) not in (1, channels) or len(std) not in (1, channels) or min(std) <= 0:
        raise ValueError(
            f"mean {tuple(mean)} / std {tuple(std)}: expected 1 or {channels} values each, std > 0"
        )
    return BatchTransform(
        bool(train), augment, image_size, channels, tuple(map(float, mean)), tuple(map(float, std))
    )
