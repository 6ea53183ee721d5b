"""All the exceptions the CLI turns into one-line messages (a user mistake or a failed run); here so
that catching them imports no torch. Anything else that reaches the CLI is a bug: exit 1 with its
traceback."""


class UsageError(Exception):
    """A user mistake: reported as one line, exit code 2."""


class CheckpointError(UsageError, ValueError):
    """A checkpoint file that cannot be used (missing, unsafe, or not ours)."""


class JobError(UsageError, ValueError):
    """A run that must not go ahead (fingerprint mismatch, lock held); reported as exit 2."""


class Busy(JobError):
    """Another run holds OUTDIR: not a mistake, a time to try again; exit code 75 (EX_TEMPFAIL),
    so that a nightly job tells "busy" from "broken"."""

    exit_code = 75


class Unavailable(JobError):
    """What the run needs is not there now (the dask scheduler it was told to use): not a
    mistake, a time to try again; exit code 75, like Busy. Nothing ran."""

    exit_code = 75


class ScanError(UsageError, ValueError):
    """A source the user named does not exist or cannot be listed."""


class RunFailed(RuntimeError):
    """A shard could not be committed (e.g. disk full); exit code 1. `traceback`: the worker's,
    when the cause was a bug rather than OUTDIR (the CLI prints it then); `cause`: what failed,
    without the advice (what `status` tells later)."""

    def __init__(self, message: str, traceback: str = "", cause: str = ""):
        super().__init__(message)
        self.traceback = traceback
        self.cause = cause or message


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 error', '2 errors': a report a person reads says it right."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
