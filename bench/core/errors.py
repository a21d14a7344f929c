"""The one exception type for errors a user can cause and fix."""


class BenchError(Exception):
    """Bad input, missing or corrupt data, an unreachable server.

    The message is one sentence saying what is wrong and what to do; the CLI prints it without a
    traceback and exits with status 2.
    """

    exit_code = 2


class DiskFull(BenchError):
    """A write failed for lack of space (or of quota) in a folder. Every run writing there would meet
    it too, so a grid stops at it (`stops_grid`), each run resumable from its last checkpoint."""

    stops_grid = True

    def __init__(self, folder, what: str) -> None:
        super().__init__(
            f"No space left in {folder} to write {what}; free space there (or choose another folder) and run the "
            "same command again: what was written before is intact."
        )


def out_of_space(error: BaseException | None) -> OSError | None:
    """The OSError saying a disk or quota is full behind `error` (itself, or what it was raised from)."""
    import errno

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        error = error.__cause__ or error.__context__
    return None
