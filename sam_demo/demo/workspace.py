"""The dataset workspace: a set of images annotated in one page, encoded ahead in the background.

A `Workspace` is one tab's ordered images. Each `WorkspaceImage` holds its file, and once opened
the light state of its `Session` (objects, categories, undo history; the store holds the full one),
so moving between images keeps every image's work. `read_uploads` turns uploaded files and zips
into images, refusing what is not one, or past the limits, by name. `BackgroundEncoder` encodes
the images not opened yet, one at a time, only while no user's encode runs or waits, so moving to
the next image costs no wait once it has caught up. No gradio here: the handlers drive it.
"""

from __future__ import annotations

import io
import queue
import secrets
import threading
import time
import weakref
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from PIL import Image

from sam_demo.demo.render import plural
from sam_demo.demo.session import Session
from sam_demo.demo.session_store import SessionStore, default_budget_bytes
from sam_demo.demo.set_exports import SetImage
from sam_demo.engine.sam_engine import SamEngine
from sam_demo.engine.utils.files import IMAGE_SUFFIXES
from sam_demo.engine.utils.images import IMAGE_FORMATS, decode_image_bytes, to_rgb_array
from sam_demo.engine.utils.yolo import names_from_classes_txt, names_from_data_yaml

__all__ = [
    "BackgroundEncoder",
    "Workspace",
    "WorkspaceImage",
    "WorkspaceLimits",
    "WorkspaceStore",
    "YoloLabels",
    "image_label",
    "read_uploads",
    "read_yolo_uploads",
    "remade",
    "set_images",
]

HEADER_BYTES = 64 << 10  # what is read of a zip member to know it is an image before inflating it


@dataclass(frozen=True)
class WorkspaceLimits:
    """What one workspace may hold (the app's --max-images and --max-upload-mb)."""

    max_images: int = 1000
    max_bytes: int = 2 << 30


@dataclass
class WorkspaceImage:
    """One image of a workspace.

    name: its file name (a zip member's base name). data: the file as uploaded. size_hw: (H, W)
    from its header. session: the light state of its Session once opened (None before).
    problem: why it cannot be encoded, once tried (then it is skipped by the background).
    key: the embedding's key once the background encoded it.
    """

    name: str
    data: bytes
    size_hw: tuple[int, int]
    session: Session | None = None
    problem: str | None = None
    key: str | None = None  # its embedding's key, once encoded in the background

    def latest(self, sessions: SessionStore) -> Session | None:
        """Its latest state: the store's, else the light copy kept here (None: never opened)."""
        if self.session is None:
            return None
        return sessions.get(self.session.token) or self.session


@dataclass
class Workspace:
    """One tab's images, in order; `current` is the one on screen. Guarded by `lock`."""

    images: list[WorkspaceImage] = field(default_factory=list)
    current: int = 0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def nbytes(self) -> int:
        return sum(len(image.data) for image in self.images)

    def index_of(self, session_token: str) -> int | None:
        return next((i for i, im in enumerate(self.images) if im.session and im.session.token == session_token), None)

    def remove(self, index: int) -> WorkspaceImage:
        """Take image `index` out of the set (the current one stays where it was, or the image after
        a removed current one comes up); ValueError for the set's only image."""
        with self.lock:
            if len(self.images) < 2:
                raise ValueError("it is the set's only image; add another image before removing this one")
            image = self.images.pop(index)
            if index < self.current or self.current >= len(self.images):
                self.current = max(0, self.current - 1)
            return image


class WorkspaceStore:
    """token -> Workspace, thread-safe: the `max_workspaces` most recently used, holding at most
    `max_bytes` of image files together (default: the session store's budget, a quarter of the
    memory). Past either, the least recently used sets are forgotten (their opened images stay in
    the session store, as single images)."""

    def __init__(self, max_workspaces: int = 256, max_bytes: int | None = None):
        self.max_workspaces = max_workspaces
        self.max_bytes = default_budget_bytes() if max_bytes is None else max_bytes
        self._entries: OrderedDict[str, Workspace] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, workspace: Workspace) -> None:
        with self._lock:
            self._entries[workspace.token] = workspace
            self._entries.move_to_end(workspace.token)
            total = sum(w.nbytes for w in self._entries.values())
            for token in list(self._entries):
                if len(self._entries) <= self.max_workspaces and total <= self.max_bytes:
                    break
                if token != workspace.token:
                    total -= self._entries.pop(token).nbytes

    def get(self, token: str | None) -> Workspace | None:
        with self._lock:
            workspace = self._entries.get(token) if token else None
            if workspace is not None:
                self._entries.move_to_end(token)
            return workspace


def read_uploads(
    files: list[tuple[str, bytes]],
    limits: WorkspaceLimits,
    held: tuple[int, int] = (0, 0),
    max_pixels: int = 0,
    names: set[str] | None = None,
) -> tuple[list[WorkspaceImage], list[str]]:
    """The images among uploaded files (name, bytes): image files, and the image files inside zips
    (by base name: a member's folders are dropped, nothing is written to disk). `held`: (images,
    bytes) the workspace holds already; `names`: its images' names (lower case), so that a name
    already taken gets _2, _3, ... (COCO and YOLO name images by them). Returns the images and the
    problems, each naming its file: not an image, over the pixel limit, or past --max-images /
    --max-upload-mb (then the rest is refused). A zip member is read only after its header reads as
    an image, and only up to the bytes left, so a zip bomb costs at most that."""
    images: list[WorkspaceImage] = []
    problems: list[str] = []
    count, total = held
    taken = set(names or ())

    def room(name: str, size: int) -> bool:
        if count + 1 > limits.max_images:
            problems.append(
                f"{name} and the files after it: a workspace holds at most {limits.max_images} images (--max-images)"
            )
            return False
        if total + size > limits.max_bytes:
            problems.append(
                f"{name} and the files after it: a workspace holds at most {limits.max_bytes >> 20} MB of images (--max-upload-mb)"
            )
            return False
        return True

    def take(name: str, data: bytes) -> bool:
        nonlocal count, total
        if not room(name, len(data)):
            return False
        try:
            size_hw = _image_size(data, max_pixels)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            return True
        name = _unique_name(name, taken)
        images.append(WorkspaceImage(name, data, size_hw))
        count, total = count + 1, total + len(data)
        return True

    def left() -> int:
        return limits.max_bytes - total

    for name, data in files:
        if name.lower().endswith(".zip"):
            if not _read_zip(name, data, limits, take, left, room, problems):
                break
        elif not take(name, data):
            break
    return images, problems


LABEL_SUFFIXES = (".txt", ".yaml", ".yml")  # YOLO label files and class names


@dataclass(frozen=True)
class YoloLabels:
    """YOLO label files uploaded for a set: each stem's text, with where it came from ("a.txt", or
    "labels.zip: labels/a.txt"), and the class names of a data.yaml or classes.txt among them
    (None when there is none)."""

    texts: dict[str, tuple[str, str]]
    names: list[str] | None


def read_yolo_uploads(paths: list[Path], max_bytes: int, max_files: int) -> YoloLabels:
    """The label files among uploaded files: .txt files, a data.yaml or classes.txt for the names,
    and the same inside zips (a YOLO dataset's zip, its images skipped unread; by base name). The
    class names come from one file: the first data.yaml (else classes.txt) nearest the top. At most
    `max_bytes` of labels are read in all, a file or zip member only up to what is left, and at
    most `max_files` label files. Other files are skipped. ValueError naming the file for one that
    cannot be read or is not UTF-8 text, a zip that cannot be read, two label files of one stem, or
    past the limits."""
    texts: dict[str, tuple[str, str]] = {}
    names_files: dict[str, tuple[int, str, bytes]] = {}  # "data.yaml" | "classes.txt" -> (depth, where, bytes)
    left, count = max_bytes, 0

    def text_of(where: str, data: bytes) -> str:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError(f"{where} is not UTF-8 text") from None

    def take(where: str, base: str, depth: int, read) -> None:
        nonlocal left, count
        lower = base.lower()
        kind = "data.yaml" if lower in ("data.yaml", "data.yml") else lower if lower == "classes.txt" else None
        if kind is not None and kind in names_files and names_files[kind][0] <= depth:
            return  # another names file, deeper down: not read
        count += 1
        if count > max_files:
            raise ValueError(f"{where} and the files after it: at most {max_files:,} label files load at once")
        data = read(left + 1)
        left -= len(data)
        if left < 0:
            raise ValueError(f"{where}: the label files are over {max_bytes >> 20} MB together")
        if kind is not None:
            names_files[kind] = (depth, where, data)
        elif lower.endswith(".txt"):
            stem = PurePosixPath(base).stem
            if stem in texts:
                raise ValueError(f"{texts[stem][0]} and {where} both label {stem}; load one of them")
            texts[stem] = (where, text_of(where, data))

    for path in paths:
        suffix = path.suffix.lower()
        try:
            if suffix in LABEL_SUFFIXES:
                with open(path, "rb") as source:
                    take(path.name, path.name, 0, source.read)
            elif suffix == ".zip":
                _read_label_zip(path, take, 2 * max_files)  # a dataset's zip: its images and their labels
        except OSError as exc:
            raise ValueError(f"{path.name} cannot be read ({exc.strerror or type(exc).__name__})") from None
    names = None
    if "data.yaml" in names_files:
        _, where, data = names_files["data.yaml"]
        names = names_from_data_yaml(text_of(where, data), where)
    elif "classes.txt" in names_files:
        _, where, data = names_files["classes.txt"]
        names = names_from_classes_txt(text_of(where, data), where)
    return YoloLabels(texts, names)


# A zip member's entry in its directory, at most (46 bytes and a name, extra field and comment):
# zipfile makes an object of ~500 bytes per entry before anything else, ~6x the zip's size in all.
ZIP_ENTRY_BYTES = 512


def zip_members(source: BinaryIO) -> tuple[int, int]:
    """(members, directory bytes) a zip's end record gives (ZIP64's too), read before zipfile reads
    its directory, whose entries it makes objects of first (2 M empty members: 1.1 GB). The
    directory's size bounds its entries whatever the count says. (0, 0) with no end record (zipfile
    then says the file is not a zip)."""
    size = source.seek(0, io.SEEK_END)
    source.seek(max(0, size - 22 - 0xFFFF))  # the end record, then a comment of up to 65,535 bytes
    tail = source.read()
    source.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        return 0, 0
    count = int.from_bytes(tail[at + 10 : at + 12], "little")
    directory = int.from_bytes(tail[at + 12 : at + 16], "little")
    if at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":  # ZIP64: its own end record has them
        source.seek(int.from_bytes(tail[at - 12 : at - 4], "little"))
        record = source.read(48)
        source.seek(0)
        if record[:4] == b"PK\x06\x06":
            count = int.from_bytes(record[32:40], "little")
            directory = int.from_bytes(record[40:48], "little")
    return count, directory


def too_many_members(source: BinaryIO, most: int) -> int | None:
    """The zip's members if it holds more than `most` (or its directory is too large for that many),
    else None."""
    count, directory = zip_members(source)
    return max(count, directory // ZIP_ENTRY_BYTES) if count > most or directory > most * ZIP_ENTRY_BYTES else None


def _read_label_zip(path: Path, take, max_members: int) -> None:
    """Each label member of a zip through take(where, base name, depth, read); ValueError for a zip of
    more than `max_members` members in all."""
    with open(path, "rb") as source:
        members = too_many_members(source, max_members)
    if members is not None:
        raise ValueError(
            f"{path.name} holds {members:,} files, too many to be a set's labels (at most {max_members:,})"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                name = member.filename.replace("\\", "/")
                base = PurePosixPath(name).name
                if member.is_dir() or base.startswith(".") or not base.lower().endswith(LABEL_SUFFIXES):
                    continue
                with archive.open(member) as source:
                    take(f"{path.name}: {member.filename[:80]}", base, name.strip("/").count("/"), source.read)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path.name} is not a readable zip ({exc})") from None


def _unique_name(name: str, taken: set[str]) -> str:
    """`name`, or stem_2.ext, stem_3.ext, ...: not in `taken` (lower case), which it joins."""
    stem, suffix, k, candidate = PurePosixPath(name).stem, PurePosixPath(name).suffix, 1, name
    while candidate.lower() in taken:
        k += 1
        candidate = f"{stem}_{k}{suffix}"
    taken.add(candidate.lower())
    return candidate


def _read_zip(name: str, data: bytes, limits: WorkspaceLimits, take, left, room, problems: list[str]) -> bool:
    """The zip's image members through `take`; False once the limits stop the upload."""
    buffer = io.BytesIO(data)
    if (count := too_many_members(buffer, 10 * limits.max_images)) is not None:
        problems.append(f"{name}: {count:,} files, too many to be a set of images (--max-images)")
        return True
    try:
        archive = zipfile.ZipFile(buffer)
    except (zipfile.BadZipFile, ValueError) as exc:
        problems.append(f"{name}: not a readable zip ({exc})")
        return True
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > 10 * limits.max_images:  # more than its end record said
            problems.append(f"{name}: {len(members):,} files, too many to be a set of images (--max-images)")
            return True
        found, skipped = 0, []
        for member in members:
            base = PurePosixPath(member.filename.replace("\\", "/")).name  # never a path
            if base.lower().endswith(".zip"):
                problems.append(f"{name}: {base} is a zip inside the zip; it was not opened")
                continue
            if base.startswith("."):  # hidden files (a Mac's ._ copies): not the user's
                continue
            if not base.lower().endswith(IMAGE_SUFFIXES):
                skipped.append(base)
                continue
            found += 1
            if not room(base, member.file_size):
                return False
            try:
                with archive.open(member) as source:
                    head = source.read(HEADER_BYTES)
                    _image_size(head, 0, partial=True)  # not an image: not inflated any further
                    content = head + source.read(left() - len(head) + 1)
            except ValueError as exc:
                problems.append(f"{name}: {base}: {exc}")
                continue
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                problems.append(f"{name}: {base} cannot be read ({exc})")
                continue
            if not take(base, content):
                return False
        if not found:
            problems.append(f"{name}: holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        elif skipped:
            more = f", and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            problems.append(
                f"{name}: {plural(len(skipped), 'file')} not an image skipped ({', '.join(skipped[:3])}{more})"
            )
    return True


def _image_size(data: bytes, max_pixels: int, partial: bool = False) -> tuple[int, int]:
    """(H, W) from the header (EXIF orientation applied); ValueError for a file that is not an image.
    partial: `data` is the file's first bytes only (the header is enough to know an image)."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            w, h = image.size
            orientation = 1 if partial else image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a decoder's error on untrusted bytes (UnidentifiedImageError, OSError, ...)
        raise ValueError("not an image this app reads (PNG, JPEG, WebP, BMP, TIFF, GIF)") from None
    if max_pixels and w * h > max_pixels:
        raise ValueError(f"{w}x{h} is over the {max_pixels / 1e6:.0f} MP limit (--max-pixels)")
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


class BackgroundEncoder:
    """Encodes workspace images ahead, one at a time, on a daemon thread, at low priority: before
    each image it waits until no other encode runs or waits (`engine.cache.computing`), so a user's
    upload or open goes first and waits for at most the one image under way. An image opened while
    it is being encoded joins that encode (the cache's single flight). Workspaces are held weakly:
    a forgotten one's images are dropped from the queue."""

    def __init__(self, engine: SamEngine, pause_s: float = 0.2):
        self.engine = engine
        self.pause_s = pause_s
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, workspace: Workspace) -> None:
        """Queue the workspace's images not encoded yet, from the one after the current onwards."""
        with workspace.lock:
            n = len(workspace.images)
            order = [(workspace.current + k) % n for k in range(1, n + 1)]
        for index in order:
            self._queue.put((weakref.ref(workspace), index))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sam-background-encode", daemon=True)
                self._thread.start()

    def encoded(self, image: WorkspaceImage) -> bool:
        """Whether the image's embedding is ready (in the engine's memory cache)."""
        key = image.session.embedding_key if image.session is not None else image.key
        return key is not None and key in self.engine.cache

    def idle(self) -> bool:
        return self._queue.unfinished_tasks == 0

    def _run(self) -> None:
        while True:
            ref, index = self._queue.get()
            try:
                workspace = ref()
                if workspace is None:
                    continue
                with workspace.lock:
                    image = workspace.images[index] if index < len(workspace.images) else None
                if image is None or image.problem is not None or self.encoded(image):
                    continue
                while self.engine.cache.computing:
                    time.sleep(self.pause_s)
                try:
                    rgb = to_rgb_array(decode_image_bytes(image.data, self.engine.max_pixels), self.engine.max_pixels)
                    image.key = self.engine.embed(rgb).key
                except (ValueError, RuntimeError) as exc:
                    image.problem = str(exc)
            finally:
                self._queue.task_done()


def image_label(index: int, count: int, image: WorkspaceImage, encoded: bool, objects: int | None) -> str:
    """The strip's line for an image: "2/10 · cat.png · 3 objects" (or not encoded / encoded / cannot
    be encoded); `objects`: its objects, once opened (else None)."""
    if image.problem is not None:
        state = "cannot be encoded"
    elif objects is not None:
        state = plural(objects, "object")
    else:
        state = "encoded" if encoded else "not encoded"
    name = image.name if len(image.name) <= 40 else image.name[:39] + "…"
    return f"{index + 1}/{count} · {name} · {state}"


def set_images(workspaces: WorkspaceStore, sessions: SessionStore, session: Session) -> list[SetImage]:
    """Each image of `session`'s workspace as its downloads see it, with its latest session (maybe
    light: `remade` makes its masks when its turn comes). ValueError without a workspace."""
    workspace = workspaces.get(sessions.latest(session).workspace)
    if workspace is None:
        raise ValueError("this image is not one of a set: add images first, or download this image's files")
    with workspace.lock:
        images = list(workspace.images)
    return [SetImage(i.name, i.size_hw, i.data, i.latest(sessions)) for i in images]


def remade(engine: SamEngine, session: Session) -> Session:
    """A fork of the session with every object's masks made (its embedding from the cache or the
    store, else encoded again), leaving the stored one as it is."""
    full = session.fork()
    full.update(engine)
    return full
