"""Atomic file writes and JSON files: what every file of a run folder is written with."""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


class WriteError(OSError):
    """A file of the run folder could not be written; the previous one is unchanged."""

    def __init__(self, path: Path, err: OSError):
        code = errno.errorcode.get(err.errno or 0, "")
        why = f"{err.strerror or err}{f' ({code})' if code else ''}"
        kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
        super().__init__(f"{path}: could not be written: {why}; {kept}")
        self.errno, self.path = err.errno, path


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call write(tmp_path), then move the finished file into place.

    The temporary file lives in the target's folder (same file system), is
    fsynced, and replaces the target in one os.replace: a kill at any moment
    leaves either the old file or the new one, never a broken one. An OSError
    on the way (a full disk: ENOSPC) removes the temporary file and is raised
    as `WriteError`, one line naming the file and saying the old one is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            raise WriteError(path, err) from None
        raise


def write_chunk(f: Any, data: Any) -> int:
    """Every byte `torch_save` writes goes through here (a test injects ENOSPC here)."""
    return f.write(data)


class _KeepingErrors(io.RawIOBase):
    """A write-only file that remembers the OSError of a failed write.

    torch.save turns an error of the file it writes into a RuntimeError
    ("unexpected pos ..."); this keeps the real one (ENOSPC, EIO) to raise.
    """

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return write_chunk(self.f, data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save(obj, path) atomically; a failed write raises its own OSError (WriteError)."""
    import torch

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            sink = _KeepingErrors(f)
            try:
                torch.save(obj, sink)
            except RuntimeError:
                if sink.error is not None:
                    raise sink.error from None
                raise

    atomic_write(path, write)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
