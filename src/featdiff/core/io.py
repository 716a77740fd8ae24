"""Small helpers for writing to disk atomically (nothing is left half-written)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from featdiff.errors import FeatdiffError

MARKER = ".featdiff"
"""An empty file in every folder featdiff writes: what marks a folder as featdiff's own output."""


def is_featdiff_output(path: str | os.PathLike) -> bool:
    """True for a folder featdiff wrote: it holds the marker, or (older outputs) a JSON file with the
    ``featdiff_version`` every featdiff writer records."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    for f in path.glob("*.json"):
        try:
            if f.stat().st_size < 10_000_000 and '"featdiff_version"' in f.read_text(errors="ignore"):
                return True
        except OSError:
            continue
    return False


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``, on error it is removed.

    Nothing a user wrote is deleted: an existing ``path`` is replaced only when it is empty or featdiff's own
    output (``overwrite=None``, the default), whatever it holds (``overwrite=True``), or never
    (``overwrite=False``). The check runs before anything is written.
    """
    path = Path(path)
    check_replaceable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        (tmp / MARKER).touch()
        if path.exists():
            check_replaceable(path, overwrite)
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            old.rmdir()
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(path: Path, overwrite: bool | None) -> None:
    """Raise unless ``atomic_dir(path, overwrite)`` may replace ``path`` (see there)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise FeatdiffError(f"{path} exists and is not a folder; pick another path.")
    if overwrite is True or not any(path.iterdir()):
        return
    if overwrite is False:
        raise FeatdiffError(f"{path} exists; pass overwrite=True or pick another folder.")
    if not is_featdiff_output(path):
        raise FeatdiffError(
            f"{path} is not empty and was not written by featdiff; featdiff will not replace it. Pick another "
            "folder, or pass overwrite=True (--overwrite on the command line) to replace it and everything in it."
        )


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(obj, indent=2, sort_keys=True, default=str))
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
