"""The one exception type for errors a user can cause and fix."""


class BenchError(Exception):
    """Bad input, missing or corrupt data, an unreachable server.

    The message is one sentence saying what is wrong and what to do; the CLI prints it without a
    traceback and exits with status 2.
    """

    exit_code = 2
