"""One answer, or one error, per image file: the records and the file loop of both runtimes.

`answer_files` reads files in batches (decoded on a thread pool, the next
batch while the model runs on this one) and hands each batch's decoded
images to a backend's `classify`; a file that cannot be read becomes a
`PredictError` in its place and the other files of its batch still get
answers. `ravit.runtime.predict` (torch) and `ravit.runtime.exported`
(onnxruntime) both use it, so their records and error handling are one.
NumPy and Pillow only: no torch here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ravit.errors import describe_error
from ravit.runtime.images import read_image

# A backend's batch classifier: uint8 (B, C, S, S) -> per image
# (class index, probability, 0-based exit, entropy).
Classify = Callable[[np.ndarray], list[tuple[int, float, int, float]]]


@dataclass(frozen=True)
class Prediction:
    """The answer for one file."""

    path: Path
    class_index: int
    class_name: str
    probability: float  # softmax probability of the predicted class at the exit taken
    exit: int  # the exit that answered, 1-based (1 .. number of exits)
    entropy: float  # softmax entropy (nats) at that exit
    flops: int  # the analytic FLOPs spent on this image: cumulative cost up to that exit
    ok: ClassVar[bool] = True

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "class_index": self.class_index,
            "class_name": self.class_name,
            "probability": self.probability,
            "exit": self.exit,
            "entropy": self.entropy,
            "flops": self.flops,
        }


@dataclass(frozen=True)
class PredictError:
    """A file that got no answer, with a one-line message that names it."""

    path: Path
    message: str
    ok: ClassVar[bool] = False

    def to_dict(self) -> dict:
        return {"path": str(self.path), "error": self.message}


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def answer_files(
    files: Sequence[Path],
    shape: tuple[int, int],
    classify: Classify,
    classes: Sequence[str],
    exit_flops: Sequence[int],
    batch_size: int,
) -> Iterator[Prediction | PredictError]:
    """Per file, in order: a Prediction or a PredictError.

    shape is (channels, image size) to read the files at; exit_flops the
    cumulative FLOPs of each exit (recorded per answer).
    """
    chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="ravit-predict") as pool:

        def submit(chunk: Sequence[Path]) -> list[Future]:
            return [pool.submit(_read, f, *shape) for f in chunk]

        pending = submit(chunks[0]) if chunks else []
        for k, chunk in enumerate(chunks):
            loaded = [f.result() for f in pending]
            pending = submit(chunks[k + 1]) if k + 1 < len(chunks) else []
            good = [i for i, item in enumerate(loaded) if isinstance(item, np.ndarray)]
            answers = dict(zip(good, classify(np.stack([loaded[i] for i in good])))) if good else {}
            for i, path in enumerate(chunk):
                if i in answers:
                    c, p, e, h = answers[i]
                    yield Prediction(path, c, classes[c], p, e + 1, h, exit_flops[e])
                else:
                    yield PredictError(path, loaded[i])


def _read(path: Path, channels: int, size: int) -> np.ndarray | str:
    """The image as uint8 (C, S, S), or a one-line message naming the file."""
    try:
        return read_image(path, channels, size)
    except (OSError, ValueError) as err:
        text = str(err).strip().splitlines()
        message = text[0] if text else describe_error(err)
        return message if str(path) in message else f"{path}: {message}"
