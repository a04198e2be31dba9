"""Reading files that users or other processes put in place, within bounds.

A path may name a FIFO (a read would block), a device (`/dev/zero`: a read never ends) or a file far
larger than any the caller takes; `read_regular` reads only a regular file, and at most `max_bytes`.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "NotARegularFile", "image_files", "read_regular"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")  # what is taken as an image file


class NotARegularFile(ValueError):
    """The path names a FIFO, a device, a folder or (with follow_symlinks=False) a symlink."""


def read_regular(path, max_bytes: int, follow_symlinks: bool = True) -> bytes:
    """The bytes of the regular file at `path`. Raises NotARegularFile for anything else (never
    blocking on a FIFO), ValueError for a file over `max_bytes`, and OSError as `os.open` does
    (FileNotFoundError, PermissionError, ...)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if not follow_symlinks and exc.errno == errno.ELOOP:
            raise NotARegularFile("a symlink") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile("not a regular file")
        if info.st_size > max_bytes:
            raise ValueError(f"{info.st_size:,} bytes, over the {max_bytes:,} allowed")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grown since the check
        raise ValueError(f"over the {max_bytes:,} bytes allowed")
    return data


def image_files(folder: Path) -> list[Path]:
    """The image files (by suffix, any case) under `folder`, recursively, in name order; symlinked
    folders are not entered (`os.walk`'s default)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [Path(root, f) for f in sorted(files) if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return found
