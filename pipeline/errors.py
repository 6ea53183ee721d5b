"""Exceptions the CLI turns into one-line messages; here so that catching them imports no torch."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (missing, unsafe, or not ours)."""


class RunFailed(RuntimeError):
    """A shard could not be committed (e.g. disk full); exit code 1. `traceback`: the worker's,
    when the cause was a bug rather than OUTDIR (the CLI prints it then)."""

    def __init__(self, message: str, traceback: str = ""):
        super().__init__(message)
        self.traceback = traceback
