"""glibc malloc settings that keep large tensors' memory in the process.

With glibc's defaults, every freed block above the (dynamic) mmap threshold,
and the top of the heap above 128 KiB, goes back to the OS, and the next
batch faults the same pages in again: on a 2-core CPU that cost 60-330 ms of
system time per batch-256 forward of the cifar10 ViT (shared/PERF-NOTES.md).
Raising the trim and mmap thresholds and padding the heap top keeps the pages.

glibc reads these variables once, when the process starts, so setting them in
`os.environ` of a running process does nothing: `reexec_with_tuned_allocator`
replaces the process with a fresh interpreter that has them (`os.execve`
keeps the pid, so launchers such as torchrun that watch their workers' pids
are not disturbed). Set `RAVIT_NO_MALLOC_TUNING=1` to opt out.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

# Values from shared/PERF-NOTES.md: never trim the heap top (1 TB threshold),
# mmap only blocks of 32 MiB and more (the largest activations at batch 256
# stay on the heap), and grow the heap 512 MiB at a time.
TUNED_MALLOC_ENV: dict[str, str] = {
    "MALLOC_TRIM_THRESHOLD_": "1000000000000",
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TOP_PAD_": "536870912",
}
OPT_OUT_VAR = "RAVIT_NO_MALLOC_TUNING"


def opted_out(environ: Mapping[str, str]) -> bool:
    """True when `RAVIT_NO_MALLOC_TUNING` is set to anything but "", "0" or "false"."""
    return environ.get(OPT_OUT_VAR, "").strip().lower() not in ("", "0", "false", "no")


def tuned_env(environ: Mapping[str, str]) -> dict[str, str] | None:
    """`environ` plus the `TUNED_MALLOC_ENV` variables it does not set yet.

    Variables already present keep their values (the user's choice wins).
    Returns None when there is nothing to add or the user opted out.
    """
    if opted_out(environ):
        return None
    missing = {k: v for k, v in TUNED_MALLOC_ENV.items() if k not in environ}
    if not missing:
        return None
    return {**environ, **missing}


def allocator_status(environ: Mapping[str, str]) -> str:
    """One word for logs and benchmark output: "tuned", "partly-tuned" or "default"."""
    present = [k for k in TUNED_MALLOC_ENV if k in environ]
    if len(present) == len(TUNED_MALLOC_ENV):
        return "tuned"
    return "partly-tuned" if present else "default"


def _uses_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # no such name, or not POSIX
        return False


def reexec_with_tuned_allocator(argv: Sequence[str] | None = None) -> bool:
    """Re-execute this Python process with `tuned_env(os.environ)`, if that adds anything.

    `argv` is the full command line to run again, interpreter first; the
    default, `sys.orig_argv`, keeps interpreter options such as `-m ravit` or
    `-u`, and is not replayed for a script read from stdin or an interactive
    session. Call it first thing in an entry point: it does not return when it
    re-executes (output buffered so far is flushed first). Returns False,
    without doing anything, on non-glibc systems, when the variables are all
    set already, when `RAVIT_NO_MALLOC_TUNING` is set, or when exec fails
    (logged as a warning).
    """
    if not sys.platform.startswith("linux") or not _uses_glibc():
        return False
    env = tuned_env(os.environ)
    if env is None:
        return False
    if argv is None and sys.argv[:1] in ([], [""], ["-"]):
        return False  # stdin is consumed and a REPL has state: nothing to run again
    args = list(sys.orig_argv if argv is None else argv)
    if not args:
        raise ValueError("argv is empty: expected the command line, interpreter first")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, args, env)
    except OSError as err:
        log.warning("could not re-execute %s with tuned malloc settings: %s", args, err)
    return False
