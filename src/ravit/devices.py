"""Devices and precision: which torch device a command runs on, and its autocast dtype.

Shared by training, evaluation and the runtimes; imports nothing of ravit.

`resolve_precision` is the one rule behind `amp: auto` (docs/training.md):

- CUDA: bf16 where the GPU has it, fp16 otherwise.
- CPU with bf16 instructions (AMX, or AVX-512 BF16): bf16 where the matmuls
  of one call are big enough to pay for the casts, fp32 otherwise: width
  D >= 64 and images x tokens x D^2 (the rows of one call's matmuls times
  their size) >= 2^23. Measured (issue 17, 2-core AVX-512 BF16 CPU, torch
  2.13, bf16 / fp32 speed; docs/training.md): every case at or above the
  bound ran 1.3x to 3.4x faster in bf16 (D 64 batch 128: 1.3-1.5x, D 128
  batch 8: 1.5x, batch 128: 2.5x, D 768: 3.4x); below it, 0.5x to 1.4x
  (D 32 at batch 128: 0.96x, D 64 at batch 16-64: 0.6-1.25x, one image at
  D 128: 0.7-0.9x, at D 256: 1.3-1.5x).
- Any other CPU: fp32.

Weights stay fp32 (autocast casts per op) and bf16 needs no loss scaling.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device


CPU_BF16_MIN_WIDTH = 64  # D below this: bf16 no faster on the CPU (D 32: 0.96x)
CPU_BF16_MIN_WORK = 2**23  # images x tokens x D^2 of one call below this: not surely faster

_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Precision:
    """The autocast dtype of a command (None: plain fp32) and why it was chosen."""

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        return _NAMES[self.dtype]

    def autocast(self, device: torch.device | str):
        """The context to run the model's forward (and the loss) in."""
        device_type = torch.device(device).type
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)

    def to_dict(self) -> dict[str, str]:
        return {"dtype": self.name, "reason": self.reason}


def cpu_bf16_instructions() -> str | None:
    """The CPU's bf16 matmul instructions as torch sees them: "amx", "avx512_bf16" or None."""
    cpu = getattr(torch, "cpu", None)
    if getattr(cpu, "_is_amx_tile_supported", lambda: False)():
        return "amx"
    if getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "avx512_bf16"
    return None


def resolve_precision(
    amp: str,
    device: torch.device | str,
    *,
    width: int,
    images: int,
    tokens: int,
    instructions: str | None | bool = True,
) -> Precision:
    """The precision `amp` means for calls of `images` images of `tokens` tokens, D = `width`.

    amp is "off" (fp32), "bf16", "fp16" (as asked) or "auto" (the rule in
    this module's docstring). `instructions` is for tests: True asks the CPU,
    a string or None stands for what it would answer.
    """
    device = torch.device(device)
    if amp == "off":
        return Precision(None, "amp off")
    if amp in ("bf16", "fp16"):
        return Precision({"bf16": torch.bfloat16, "fp16": torch.float16}[amp], f"amp {amp}")
    if amp != "auto":
        raise ValueError(f"unknown amp mode {amp!r}; expected auto, off, bf16 or fp16")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, "auto: CUDA with bf16")
        return Precision(torch.float16, "auto: CUDA without bf16")
    if device.type != "cpu":
        return Precision(None, f"auto: fp32 on {device.type}")
    found = cpu_bf16_instructions() if instructions is True else instructions
    if not found:
        return Precision(None, "auto: this CPU has no bf16 instructions (AMX, AVX-512 BF16)")
    work = images * tokens * width**2
    what = f"images x tokens x D^2 = {images} x {tokens} x {width}^2 = {work:,}"
    if width < CPU_BF16_MIN_WIDTH:
        return Precision(None, f"auto: CPU with {found}, but D {width} < {CPU_BF16_MIN_WIDTH}")
    if work < CPU_BF16_MIN_WORK:
        return Precision(None, f"auto: CPU with {found}, but {what} < 2^23")
    return Precision(
        torch.bfloat16, f"auto: CPU with {found}, D {width} >= {CPU_BF16_MIN_WIDTH}, {what} >= 2^23"
    )
