"""Batched torch transforms: shapes, determinism, and values checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ravit.data import (
    crop,
    make_transform,
    match_channels,
    normalize,
    random_crop,
    random_flip,
    random_resized_crop,
    resize,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(b: int = 8, c: int = 3, s: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, s, s), generator=gen(seed), dtype=torch.uint8)


def test_crop_by_hand():
    x = torch.arange(1, 10, dtype=torch.uint8).reshape(1, 1, 3, 3)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    assert crop(padded, 0, 0, 3)[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [0, 4, 5]]
    assert crop(padded, 2, 1, 3)[0, 0].tolist() == [[4, 5, 6], [7, 8, 9], [0, 0, 0]]
    two = torch.cat([padded, padded])
    out = crop(two, torch.tensor([0, 1]), torch.tensor([2, 1]), 3)
    assert out[0, 0].tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]
    assert torch.equal(out[1], x[0])
    with pytest.raises(ValueError, match="inside"):
        crop(padded, 3, 0, 3)


def test_random_crop_is_a_shifted_window_per_image():
    x = batch(64, 2, 6)
    out = random_crop(x, 6, padding=2, generator=gen(1))
    assert out.shape == (64, 2, 6, 6) and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = []
    for i in range(len(x)):  # the one window of the padded image it equals
        hits = [
            (t, l)
            for t in range(5)
            for l in range(5)  # noqa: E741
            if torch.equal(out[i], padded[i, :, t : t + 6, l : l + 6])
        ]
        assert len(hits) == 1
        offsets.append(hits[0])
    assert len(set(offsets)) > 10  # independent offsets per image
    assert torch.equal(random_crop(x, 6, 2, gen(1)), out)  # same seed, same crops
    assert not torch.equal(random_crop(x, 6, 2, gen(2)), out)


def test_random_crop_smaller_than_image_and_errors():
    x = batch(4, 3, 10)
    assert random_crop(x, 7, generator=gen()).shape == (4, 3, 7, 7)
    with pytest.raises(ValueError, match="exceeds"):
        random_crop(x, 13, padding=1)
    with pytest.raises(ValueError, match="padding"):
        random_crop(x, 8, padding=-1)


def test_random_flip():
    x = batch(32)
    assert torch.equal(random_flip(x, gen(), p=1.0), x.flip(-1))
    assert torch.equal(random_flip(x, gen(), p=0.0), x)
    out = random_flip(x, gen(3))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f != k for f, k in zip(flipped, kept)) and 5 < sum(flipped) < 27
    assert torch.equal(random_flip(x, gen(3)), out)


def test_random_resized_crop():
    x = batch(16, 3, 24)
    out = random_resized_crop(x, 16, gen(5))
    assert out.shape == (16, 3, 16, 16) and out.dtype == torch.uint8
    assert torch.equal(random_resized_crop(x, 16, gen(5)), out)
    assert not torch.equal(random_resized_crop(x, 16, gen(6)), out)
    # The whole image at its own size: bilinear sampling at pixel centres is exact.
    whole = random_resized_crop(x, 24, gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(whole, x)
    # Float in, float out, inside the input's range; a constant image stays constant.
    f = torch.rand(4, 3, 20, 20, generator=gen(7))
    out = random_resized_crop(f, 12, gen(8))
    assert out.dtype == torch.float32 and out.min() >= f.min() and out.max() <= f.max()
    flat = torch.full((4, 1, 20, 20), 77, dtype=torch.uint8)
    assert (random_resized_crop(flat, 9, gen()) == 77).all()


def test_random_resized_crop_fallback_is_a_central_crop():
    # No box with aspect in [2, 3] fits a 10x10 image at >= 99 % area: the centre
    # crop 10 wide x 5 high (rows 2..6). Sampling is continuous, so on this linear
    # ramp output row j reads source row 2 + (j + 0.5) / 2 - 0.5 exactly.
    x = torch.arange(100, dtype=torch.float32).reshape(1, 1, 10, 10)
    out = random_resized_crop(x, 10, gen(), scale=(0.99, 1.0), ratio=(2.0, 3.0))
    rows = 1.75 + 0.5 * torch.arange(10.0)
    assert torch.allclose(out[0, 0], 10 * rows[:, None] + torch.arange(10.0), atol=1e-4)


def test_resize():
    x = batch(2, 3, 32)
    assert resize(x, 32) is x
    checker = ((torch.arange(32)[:, None] + torch.arange(32)) % 2 * 255).to(torch.uint8)
    small = resize(checker.expand(1, 1, 32, 32), 16)
    # Antialiased: grey, not an aliased pattern (the border pixels renormalise: +-3).
    assert small.dtype == torch.uint8 and (small.int() - 128).abs().max() <= 3
    assert (small[..., 1:-1, 1:-1] == 128).all()
    big = resize(x.float() / 255, 40)
    assert big.shape == (2, 3, 40, 40) and big.dtype == torch.float32


def test_normalize():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 1, 1, 3).repeat(1, 3, 1, 1)
    out = normalize(x, (0.5, 0.2, 0.0), (0.5, 0.2, 1.0))
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, 0, 0], torch.tensor([-1.0, -0.6, 1.0]))
    assert torch.allclose(out[0, 1, 0], torch.tensor([-1.0, 0.0, 4.0]))
    assert torch.allclose(out[0, 2, 0], torch.tensor([0.0, 0.2, 1.0]))
    assert torch.allclose(normalize(x.float() / 255, (0.5,), (0.5,)), normalize(x, (0.5,), (0.5,)))
    with pytest.raises(ValueError, match="expected 1 or 3"):
        normalize(x, (0.5, 0.5), (0.5, 0.5))
    with pytest.raises(ValueError, match="std > 0"):
        normalize(x, (0.5,), (0.0,))


def test_match_channels():
    gray = batch(2, 1, 8)
    rgb = match_channels(gray, 3)
    assert rgb.shape == (2, 3, 8, 8) and all(torch.equal(rgb[:, i], gray[:, 0]) for i in range(3))
    color = batch(2, 3, 8, seed=1)
    luma = match_channels(color, 1)
    pil = np.array(Image.fromarray(color[0].permute(1, 2, 0).numpy()).convert("L"))
    assert (
        luma.shape == (2, 1, 8, 8) and (luma[0, 0].int() - torch.from_numpy(pil)).abs().max() <= 1
    )
    rgba = torch.cat([color, torch.full((2, 1, 8, 8), 9, dtype=torch.uint8)], 1)
    assert torch.equal(match_channels(rgba, 3), color)
    assert torch.equal(match_channels(rgba, 1), luma)
    assert match_channels(color.float(), 1).dtype == torch.float32
    assert match_channels(color, 3) is color
    with pytest.raises(ValueError, match="2-channel"):
        match_channels(batch(1, 2, 4), 3)


STATS = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2)}


@pytest.mark.parametrize("augment", ["crop-flip", "crop", "rrc-flip", "none"])
@pytest.mark.parametrize("native, channels", [(32, 3), (28, 1), (40, 3)])
def test_make_transform_shapes(augment, native, channels):
    x = batch(6, channels, native)
    for train in (True, False):
        f = make_transform(train, augment=augment, image_size=32, channels=3, **STATS)
        out = f(x, gen())
        assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32
        assert torch.equal(f(x, gen()), out)  # deterministic given the generator


def test_make_transform_eval_is_resize_and_normalize():
    x = batch(4, 1, 28)
    f = make_transform(False, augment="crop-flip", image_size=32, channels=3, **STATS)
    expected = normalize(match_channels(resize(x, 32), 3), STATS["mean"], STATS["std"])
    assert torch.equal(f(x), expected) and torch.equal(f(x), f(x))


def test_make_transform_train_is_crop_flip_then_normalize():
    x = batch(8)
    f = make_transform(True, augment="crop-flip", image_size=32, channels=3, **STATS)
    g = gen(11)
    expected = normalize(random_flip(random_crop(x, 32, 4, g), g), STATS["mean"], STATS["std"])
    assert torch.equal(f(x, gen(11)), expected)
    assert not torch.equal(f(x, gen(12)), expected)
    # Float input in [0, 1] gives the same result as uint8 (crop and flip move pixels only).
    assert torch.allclose(f(x.float() / 255, gen(11)), expected, atol=1e-5)


def test_make_transform_one_channel_model():
    f = make_transform(True, augment="crop", image_size=8, channels=1, mean=(0.3,), std=(0.4,))
    assert f(batch(5, 3, 8), gen()).shape == (5, 1, 8, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"augment": "twirl"}, "augment must be one of"),
        ({"image_size": 0}, "image_size"),
        ({"channels": 2}, "channels"),
        ({"mean": (0.1, 0.2)}, "expected 1 or 3"),
    ],
)
def test_make_transform_errors(kwargs, match):
    args = {"augment": "none", "image_size": 32, "channels": 3, **STATS, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_transform(True, **args)


def test_transforms_reject_non_batches():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        random_flip(torch.zeros(3, 8, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu():
    x = batch(16, 3, 32)
    for augment in ("crop-flip", "rrc-flip"):
        f = make_transform(True, augment=augment, image_size=32, channels=3, **STATS)
        on_gpu = f(x.cuda(), gen(4))
        assert on_gpu.device.type == "cuda"
        assert torch.allclose(on_gpu.cpu(), f(x, gen(4)), atol=1e-4)
