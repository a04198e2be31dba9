"""Image embeddings on disk: the tier under the engine's memory cache, shared by processes.

An encode costs seconds on a CPU; its embedding is a few MiB. The store keeps embeddings across
restarts, LRU evictions and Serve replicas: every process that opens the same directory with the
same model and plan reads what the others wrote.

- **One file an entry**, safetensors (`features`, the embedding as the engine keeps it) with its
  metadata: the format version, the image key, the namespace (the model's weights digest and the
  plan's encoder fields: see `loading.store_namespace`), the image's original size and a blake2b
  checksum of the tensor's bytes. The file name is a digest of format, namespace and image key, so
  two models or two plans sharing a directory never see each other's entries.
- **Writes** go to a temp file in the directory, fsynced, then renamed into place: a crash never
  leaves a partial file under an entry's name, and two processes writing the same entry leave one
  whole one.
- **Reads** check the metadata, shape and checksum. A bad entry (truncated, a flipped bit, another
  entry's file, a symlink) is deleted and counted, and the caller encodes again; it is never
  served. An entry of another format version is skipped and left alone.
- **Bounded in bytes**, least recently used first: a hit sets the file's mtime, and a writer makes
  room under an exclusive `flock` on `.lock` before its rename, so the bound holds with several
  writers (on filesystems where flock locks across machines).
- **Failures turn it off, not the server**: a full disk, a read-only or vanished directory that
  cannot be made again logs one warning and the engine goes on from memory.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from sam_demo.engine.utils.files import read_regular

__all__ = ["EmbeddingStore", "StoreStats", "StoredEmbedding"]

log = logging.getLogger("sam_demo")

FORMAT = 1  # the entry layout; another version's entries are skipped, never read or deleted
SUFFIX = ".safetensors"
TMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
STALE_TMP_S = 3600  # a temp file this old was left by a crash (a write takes milliseconds)
MAX_ENTRY_BYTES = 64 << 20  # an entry is 2-4 MiB (ViT-B/L/H: 256x64x64); larger is not ours
MAX_HEADER_BYTES = 1 << 16
ENTRY_NAME = re.compile(r"[0-9a-f]{40}" + re.escape(SUFFIX))  # the only files the store reads, counts or evicts
_DISABLING = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


@dataclass(frozen=True)
class StoreStats:
    """/health's view of the store.

    Args:
        enabled (`bool`): False once a failure turned it off (`disabled_reason` says why).
        directory (`str`), max_bytes (`int`): where, and the bound.
        entries (`int`), bytes (`int`): what the directory holds now (all processes' entries).
        hits (`int`), misses (`int`), writes (`int`): this process's reads that found / did not find
            an entry, and entries it wrote.
        evictions (`int`): entries this process deleted to stay within `max_bytes`.
        corrupt (`int`): bad entries this process found, deleted and encoded again.
        skipped (`int`): entries of another format version, left in place.
    """

    enabled: bool
    directory: str
    max_bytes: int
    entries: int
    bytes: int
    hits: int
    misses: int
    writes: int
    evictions: int
    corrupt: int
    skipped: int
    disabled_reason: str | None


@dataclass(frozen=True)
class StoredEmbedding:
    """An entry read back. features: the embedding tensor on the CPU, as it was put;
    original_hw: the image's (height, width) in pixels."""

    features: torch.Tensor
    original_hw: tuple[int, int]


class _BadEntry(Exception):
    """The entry cannot be served: deleted, counted as corrupt."""


class _LockError(OSError):
    """The store's lock file is not a regular file: the store cannot be used safely."""


class _OtherFormat(Exception):
    """Written by another version of the store's format: skipped, left alone."""


class EmbeddingStore:
    """A directory of embeddings, bounded to `max_bytes`, for one model and plan (`namespace`).

    Thread-safe, and safe to share between processes. Raises ValueError when `directory` exists and
    is not a directory; a directory that cannot be created or written turns the store off (a warning).
    """

    def __init__(self, directory: str | Path, max_bytes: int, namespace: str):
        self.directory = self.check_directory(directory)
        if max_bytes <= 0:
            raise ValueError(f"the embedding store's bound must be > 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self.namespace = namespace
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("hits", "misses", "writes", "evictions", "corrupt", "skipped"), 0)
        self._disabled_reason: str | None = None
        self._warned_format = False
        self._foreign: set[str] = set()  # entry names another format version holds: never overwritten
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self._locked():  # the lock file is made, so the folder is writable
                self._remove_stale_temps()
        except _LockError as exc:
            self._disable(str(exc))
        except OSError as exc:
            self._disable(f"the folder {self.directory} cannot be written ({exc.strerror or exc})")

    @staticmethod
    def check_directory(directory: str | Path) -> Path:
        """The store's folder as a path; ValueError if something other than a folder is there."""
        path = Path(directory).expanduser()
        if path.exists() and not path.is_dir():
            raise ValueError(f"--embedding-store {directory} is a file, not a folder; give a folder's path")
        return path

    # ---- the two operations --------------------------------------------------------------
    def get(self, image_key: str, shape: tuple[int, ...], dtype: torch.dtype) -> StoredEmbedding | None:
        """The entry for `image_key` if a whole, valid one of this `shape` and `dtype` is stored;
        else None (a miss; a bad entry is deleted)."""
        if not self.enabled:
            return None
        path = self._path(image_key)
        try:
            data = self._read(path)
        except FileNotFoundError:
            return self._count_miss("misses")
        except _BadEntry as exc:
            return self._drop(path, exc)
        except OSError as exc:  # unreadable now (permissions, no file descriptors, I/O): a miss, kept
            log.warning("sam_demo: embedding store: %s cannot be read now (%s); encoding instead", path.name, exc)
            return self._count_miss("misses")
        try:
            entry = self._decode(data, image_key, shape, dtype)
        except _OtherFormat as exc:
            with self._lock:
                self._foreign.add(path.name)
            if not self._warned_format:
                self._warned_format = True
                log.warning("sam_demo: embedding store: skipping %s: %s", path.name, exc)
            return self._count_miss("skipped")
        except _BadEntry as exc:
            return self._drop(path, exc)
        try:
            os.utime(path, follow_symlinks=False)  # recently used: the last to be evicted
        except OSError:
            pass  # evicted or replaced since the read: the entry read is still whole
        self._count("hits")
        return entry

    def put(self, image_key: str, features: torch.Tensor, original_hw: tuple[int, int]) -> bool:
        """Store an embedding (any device; copied to the CPU); True if it was written. Failures are
        logged, never raised: a full disk or a read-only folder turns the store off. An entry larger
        than the bound, or under a name another format version holds, is not written."""
        path = self._path(image_key)
        with self._lock:
            foreign = path.name in self._foreign
        if not self.enabled or foreign:
            return False
        tensor = features.detach().to("cpu").contiguous()
        payload = memoryview(tensor.view(torch.uint8).numpy()) if tensor.numel() else b""
        metadata = {
            "format": str(FORMAT),
            "image_key": image_key,
            "namespace": self.namespace,
            "original_hw": f"{original_hw[0]},{original_hw[1]}",
        }
        metadata["checksum"] = _checksum(payload, metadata)
        data = save_safetensors({"features": tensor}, metadata=metadata)
        if len(data) > min(self.max_bytes, MAX_ENTRY_BYTES):
            log.warning(
                "sam_demo: embedding store: an entry of %d bytes does not fit the bound (%d bytes); not stored",
                len(data),
                self.max_bytes,
            )
            return False
        for attempt in range(2):
            try:
                self._write(path, data)
                self._count("writes")
                return True
            except FileNotFoundError:  # the folder was removed while serving: make it again, once
                if attempt == 0:
                    try:
                        self.directory.mkdir(parents=True, exist_ok=True)
                        continue
                    except OSError as exc:
                        self._disable(f"the folder {self.directory} is gone and cannot be made again ({exc})")
                        return False
                log.warning("sam_demo: embedding store: %s vanished while writing; entry not stored", self.directory)
            except _LockError as exc:
                self._disable(str(exc))
            except OSError as exc:
                if exc.errno in _DISABLING:
                    self._disable(f"writing to {self.directory} failed: {exc.strerror or exc}")
                else:
                    log.warning("sam_demo: embedding store: an entry could not be written (%s)", exc)
            return False
        return False

    def contains(self, image_key: str) -> bool:
        """Whether an entry file for `image_key` is stored (not read or checked)."""
        try:
            return stat.S_ISREG(os.lstat(self._path(image_key)).st_mode)
        except OSError:
            return False

    # ---- state ----------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self._disabled_reason is None

    def stats(self) -> StoreStats:
        entries = self._entries() if self.enabled else []
        with self._lock:
            counts = dict(self._counts)
        return StoreStats(
            enabled=self.enabled,
            directory=str(self.directory),
            max_bytes=self.max_bytes,
            entries=len(entries),
            bytes=sum(size for _, size, _ in entries),
            disabled_reason=self._disabled_reason,
            **counts,
        )

    # ---- files ----------------------------------------------------------------------------
    def _path(self, image_key: str) -> Path:
        name = hashlib.blake2b(f"{FORMAT}|{self.namespace}|{image_key}".encode(), digest_size=20).hexdigest()
        return self.directory / f"{name}{SUFFIX}"

    @staticmethod
    def _read(path: Path) -> bytes:
        """The file's bytes; a symlink or anything but a regular file is a bad entry (never followed)."""
        try:
            return read_regular(path, MAX_ENTRY_BYTES, follow_symlinks=False)
        except ValueError as exc:  # not a regular file, or larger than any entry
            raise _BadEntry(str(exc)) from None

    def _decode(self, data: bytes, image_key: str, shape: tuple[int, ...], dtype: torch.dtype) -> StoredEmbedding:
        if len(data) < 8:
            raise _BadEntry("truncated")
        header_len = int.from_bytes(data[:8], "little")
        if header_len > min(MAX_HEADER_BYTES, len(data) - 8):
            raise _BadEntry("truncated or not a safetensors file")
        try:
            header = json.loads(data[8 : 8 + header_len])
        except (ValueError, RecursionError):
            raise _BadEntry("unreadable header") from None
        metadata = header.get("__metadata__") if isinstance(header, dict) else None
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _BadEntry("no metadata")
        version = metadata.get("format")
        if version != str(FORMAT):
            if isinstance(version, str) and version.isdigit():
                raise _OtherFormat(f"format version {version}, this version reads {FORMAT}")
            raise _BadEntry("no format version")
        if metadata.get("image_key") != image_key or metadata.get("namespace") != self.namespace:
            raise _BadEntry("another image's or model's entry under this name")
        payload = data[8 + header_len :]
        described = {k: v for k, v in metadata.items() if k != "checksum"}
        if _checksum(payload, described) != metadata.get("checksum"):
            raise _BadEntry("checksum mismatch")
        try:
            features = load_safetensors(data)["features"]
            original_hw = tuple(int(v) for v in metadata["original_hw"].split(","))
        except (SafetensorError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise _BadEntry(f"unreadable tensor ({exc})") from None
        if tuple(features.shape) != tuple(shape) or features.dtype != dtype or len(original_hw) != 2:
            raise _BadEntry(f"{features.dtype} {tuple(features.shape)}, expected {dtype} {tuple(shape)}")
        if min(original_hw) < 1:
            raise _BadEntry(f"image size {original_hw}")
        return StoredEmbedding(features, original_hw)

    def _write(self, path: Path, data: bytes) -> None:
        tmp = self.directory / f"{TMP_PREFIX}{path.stem}-{os.getpid()}-{secrets.token_hex(4)}"
        fd = None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.close(fd)
            fd = None
            with self._locked():
                self._make_room(len(data), path.name)
                os.replace(tmp, path)  # replaces a planted symlink itself, never its target
        except BaseException:  # an interrupt too: no temp file left behind
            if fd is not None:
                os.close(fd)
            self._unlink(tmp)
            raise

    def _make_room(self, size: int, name: str) -> None:
        """Delete least recently used entries until the store and `size` more bytes fit the bound.
        Called under the directory's lock."""
        entries = sorted(e for e in self._entries() if e[2].name != name)
        total = sum(s for _, s, _ in entries)
        for _, entry_size, path in entries:
            if total + size <= self.max_bytes:
                break
            self._unlink(path)
            total -= entry_size
            self._count("evictions")

    def _entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, bytes, path) of every entry file; symlinks planted under an entry's name are removed."""
        found = []
        try:
            scan = os.scandir(self.directory)
        except OSError:
            return found
        with scan:
            for entry in scan:
                if not ENTRY_NAME.fullmatch(entry.name):
                    continue  # not an entry of this store (a user's own file is never counted or evicted)
                try:
                    if entry.is_symlink():
                        self._unlink(Path(entry.path))
                        continue
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # deleted meanwhile
                if stat.S_ISREG(info.st_mode):
                    found.append((info.st_mtime, info.st_size, Path(entry.path)))
        return found

    def _remove_stale_temps(self) -> None:
        now = time.time()
        with os.scandir(self.directory) as scan:
            for entry in scan:
                try:
                    if (
                        entry.name.startswith(TMP_PREFIX)
                        and now - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_S
                    ):
                        self._unlink(Path(entry.path))
                except OSError:
                    continue

    @contextmanager
    def _locked(self):
        lock = self.directory / LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise _LockError(f"{lock} is not a regular file (a symlink or a folder); remove it") from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _LockError(f"{lock} is not a regular file; remove it")
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _drop(self, path: Path, why: Exception) -> None:
        """A bad entry: deleted (a folder under its name cannot be: left), counted, and a miss."""
        log.warning(
            "sam_demo: embedding store: %s is damaged (%s); deleted, the image is encoded again", path.name, why
        )
        self._unlink(path)
        return self._count_miss("corrupt")

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            os.unlink(path)
        except IsADirectoryError:
            try:
                os.rmdir(path)  # an empty folder planted under an entry's name; a full one stays
            except OSError:
                pass
        except OSError:
            pass

    def discard(self, image_key: str, why: str) -> None:
        """Delete the entry of `image_key`, found bad by the caller (it disagrees with the image)."""
        self._drop(self._path(image_key), ValueError(why))
        with self._lock:
            self._counts["hits"] -= 1  # the read counted it as a hit; _drop counted it a miss

    def _disable(self, reason: str) -> None:
        with self._lock:
            if self._disabled_reason is not None:
                return
            self._disabled_reason = reason
        log.warning("sam_demo: embedding store off: %s; embeddings are kept in memory only", reason)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _count_miss(self, name: str) -> None:
        self._count(name)
        if name != "misses":
            self._count("misses")
        return None


def _checksum(payload, metadata: dict[str, str]) -> str:
    """blake2b of the tensor's bytes and the metadata (all but the checksum), so a changed image size
    or key in the header is found as surely as a changed value."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(metadata, sort_keys=True).encode())
    digest.update(payload)
    return digest.hexdigest()
