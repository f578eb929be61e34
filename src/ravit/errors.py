"""Error-message helpers shared by the data readers and the runtimes (no torch)."""

from __future__ import annotations


def describe_error(err: BaseException) -> str:
    """ "Type: first line of the message", to keep error messages on one line."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM at a step boundary, leaving a checkpoint.

    `run` is the run folder, `signum` the signal (the CLI exits with 128 + signum:
    130 for SIGINT, 143 for SIGTERM, as a shell reports a process a signal ended).
    """

    def __init__(self, signum: int, run: str, where: str, checkpoint: str):
        import signal

        self.signum, self.run = int(signum), str(run)
        name = signal.Signals(self.signum).name
        super().__init__(f"stopped by {name} {where}; resumable checkpoint: {checkpoint}")
