"""Crash-safe file writes: the one writer every checkpoint, run file, cache and results file
goes through (docs/reliability.md). Imports nothing of phasediff, so every layer may use it.

A write goes to the temporary name ``.NAME.PID.tmp`` next to the target, is fsynced, renamed
over NAME, and the directory is fsynced: readers see the old file or the new one, never a
half-written one, and a failed write leaves the old file as it was.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a directory (so that a rename inside it is durable); errors are ignored."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file + fsync + rename + directory fsync.

    The parent directory must exist. On failure the temporary file is removed and an OSError
    naming `path` is raised; `path` itself is untouched."""
    path = Path(path)
    try:
        _write_and_rename(path, data)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` of `text` encoded as UTF-8 (newlines written as they are)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_and_rename(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            if written <= 0:  # pragma: no cover - os.write raises rather than return 0
                raise OSError(errno.EIO, "short write", str(tmp))
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


__all__ = ["atomic_write_bytes", "atomic_write_text", "fsync_dir"]
