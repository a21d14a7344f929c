"""Ending a process without the interpreter's teardown.

Tearing down torch's and MLflow's modules costs a `bench` command or a worker 1.5-2 s of CPU on a
small machine, after its work is done. `end_now` runs what must run at exit, the exit handlers
(multiprocessing's clean-up of queues and children, logging's flush, MLflow's own), and leaves
the rest to the operating system. While a thread that is not a daemon still runs (a library's
thread pool), Python's own exit is used instead: it waits for such threads.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn


def end_now(code: int = 0) -> NoReturn:
    main = threading.main_thread()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main):
        sys.exit(code)
    atexit._run_exitfuncs()  # CPython's exit handlers: the part of the teardown that matters
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away (`bench models | head`)
            stream.flush()
    os._exit(code)
