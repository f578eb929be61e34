"""RUN/.lock: one training process at a time per run folder.

`hold_run(run)` takes an exclusive `fcntl.flock` on RUN/.lock for as long as
the `with` block runs. The kernel drops a flock when its process ends, however
it ends (SIGKILL included), so a killed run never leaves its folder stuck: the
file may stay, the lock does not. A second `ravit train` into the same folder,
or a `--resume` of a run another process is training, gets `RunBusyError`
at once (non-blocking), naming the process that holds it.

The holder deletes the file when it is done, so a finished run's folder holds
no lock file (a killed one's may: harmless). A process that opened the file
just before it was deleted would lock a file no longer in the folder, so
after taking the lock each process checks that RUN/.lock is still the file
it locked, and starts again if not. Where flock is missing (Windows), the
lock is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"


class RunBusyError(OSError):
    """Another live process is training the run in this folder."""

    def __init__(self, run: str | os.PathLike, holder: str):
        self.run = Path(run)
        who = f"process {holder}" if holder else "another process"
        super().__init__(
            f"{run} is being trained by {who} (it holds {Path(run) / LOCK}): wait for it to "
            "end, or train into another folder"
        )


@contextlib.contextmanager
def hold_run(run: str | os.PathLike) -> Iterator[None]:
    """Hold RUN/.lock (creating RUN if needed) for the block; RunBusyError if taken.

    A folder this call created is removed again if the block leaves nothing in
    it (a run that failed before writing anything).
    """
    run = Path(run)
    created = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    path = run / LOCK
    fd = _lock(run, path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # still holding it: nobody else can hold this file
        os.close(fd)  # closing the last descriptor releases the flock
        if created:
            with contextlib.suppress(OSError):
                run.rmdir()  # only if empty


def _lock(run: Path, path: Path) -> int:
    """An open descriptor of `path`, exclusively flocked, `path` still naming it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise RunBusyError(run, holder) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # deleted by its last holder while we opened it: try again
