"""Files written whole or not at all: what readers on a shared disk, and a crash, may meet."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.core.errors import DiskFull, out_of_space


def atomic_write_bytes(path: Path, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it into place.

    A crash at any moment leaves either the old file or the new one, never a torn file; so does a
    full disk, which is a DiskFull naming the folder. The file is readable as the user's umask
    allows (0644 under umask 022), as a plain open() would leave it: mkstemp's 0600 would hide a
    report or a decoded cache from colleagues on a shared disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if out_of_space(error):
            raise DiskFull(path.parent, path.name) from error
        raise


def _umask() -> int:
    """This process's umask: from /proc where there is one (reading it through os.umask sets it for a
    moment, which another thread creating a file would see)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
