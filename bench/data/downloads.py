"""Checksummed downloads of a dataset's public files, unpacked into the data folder."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import BenchError


@dataclass(frozen=True)
class Remote:
    """A public file with a known md5, saved as ``filename`` (relative to the data dir)."""

    url: str
    md5: str
    filename: str


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


Progress = Callable[[str, int, int], None]  # (file name, bytes so far, total bytes or 0)


def fetch(dataset: str, remote: Remote, data_dir: Path, progress: Progress | None = None) -> Path:
    """Download ``remote`` into the data dir, verify its md5 and rename it into place.

    An existing file with the right checksum is kept. Offline or a bad checksum: BenchError.
    """
    target = data_dir / remote.filename
    if target.exists() and md5sum(target) == remote.md5:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.md5()
    try:
        request = urllib.request.Request(remote.url, headers={"User-Agent": "gradattn-bench"})
        with urllib.request.urlopen(request, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(target.name, done, total)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise BenchError(
            f"Could not download {remote.url} for {dataset} ({reason}); check the network connection and run "
            f"`bench data download {dataset}` again, or fetch the file by hand and save it as {target}."
        ) from None
    if digest.hexdigest() != remote.md5:
        partial.unlink(missing_ok=True)
        raise BenchError(
            f"The download of {remote.url} for {dataset} is corrupt (md5 {digest.hexdigest()}, expected {remote.md5}); "
            f"run `bench data download {dataset}` again."
        )
    os.replace(partial, target)
    return target


def _refetch(dataset: str, archive: Path, problem: str) -> BenchError:
    return BenchError(f"{dataset}: {archive} {problem}; delete it and run `bench data download {dataset}` again.")


def extract(dataset: str, archive: Path, data_dir: Path, top_folder: str) -> None:
    """Unpack ``archive`` (tar or zip) and move its ``top_folder`` into the data dir in one rename."""
    with tempfile.TemporaryDirectory(prefix=f".{dataset}-", dir=data_dir) as scratch:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as bundle:
                    bundle.extractall(scratch)
            else:
                with tarfile.open(archive) as bundle:
                    # The "data" filter refuses absolute paths and links out of the folder.
                    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                    bundle.extractall(scratch, **safe)
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as error:
            raise _refetch(dataset, archive, f"could not be unpacked ({error})") from None
        source = Path(scratch) / top_folder
        if not source.is_dir():
            raise _refetch(dataset, archive, f"has no {top_folder}/ folder")
        target = data_dir / top_folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(source, target)


def gunzip(dataset: str, archive: Path, target: Path) -> None:
    """Decompress ``archive`` to ``target`` through a temporary file, then remove the archive."""
    partial = target.with_name(target.name + ".part")
    try:
        with gzip.open(archive, "rb") as source, open(partial, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 22)
    except (OSError, EOFError) as error:
        partial.unlink(missing_ok=True)
        raise _refetch(dataset, archive, f"could not be decompressed ({error})") from None
    os.replace(partial, target)
    archive.unlink()
