"""SIGINT / SIGTERM during training: stop at the next step boundary, resumable.

`StopRequest.installed()` replaces the SIGINT and SIGTERM handlers (in the
main thread only) by one that just records the signal. The training loop
reads `requested` before every step and after every epoch's checkpoint; on a
request it saves a checkpoint of that exact point (`ravit.training.loop`)
and raises `ravit.errors.Interrupted`. A second SIGINT while stopping raises
KeyboardInterrupt at once (the checkpoint writes are atomic, so even that
leaves a readable run folder).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return
        previous = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
