"""One user's annotation session: an image, its objects' prompts, undo/redo and the results.

Pure Python (no gradio): the web UI keeps a `Session` in `gr.State` and calls these methods.
Each object's mask is computed from *all* of its prompts in one decoder call (no mask
feedback), so the exported endpoint request replays exactly what is on screen.

A session holds what it cannot get back (the uploaded file's bytes, the prompts) and, compactly,
what it can: each object's low-res logits (masks are made from them on demand), fixed masks (loaded
from a file or found by "segment everything") as RLE. Neither the decoded pixels nor the embedding are held: the pixels are decoded again from
the file where needed, and the embedding comes from the engine's cache by the image's key (the
encoder runs again if it was evicted). `light()` drops the logits too; `update` remakes them.

Which output is shown (Meta's demo rule): a single click -> the 3 multimask candidates, the
best preselected and switchable; more clicks or a box -> the single-mask output.
"""

from __future__ import annotations

import math
import secrets
import threading
import unicodedata
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch
from pycocotools import mask as mask_utils

from sam_demo.engine.sam_engine import ImageEmbedding, SamEngine
from sam_demo.engine.utils.coco import decode_rle, encode_rle
from sam_demo.engine.utils.geometry import ImageGeometry
from sam_demo.engine.utils.images import decode_image_bytes, to_rgb_array
from sam_demo.engine.utils.prompts import points_outside
from sam_demo.engine.utils.transforms import logits_to_size, mask_to_size, masks_from_logits

MAX_HISTORY = 100
MAX_POINTS_PER_OBJECT = 64  # more says nothing new to SAM and makes each click slower
MAX_EVENTS = 5000  # prompt events per image (each click or box is one)
MAX_NEW_EVENTS = 100  # events applied by one call (the page sends a few: those made while one is in flight)
COORD_DECIMALS = 2  # prompts are kept (and so decoded and exported) rounded to 1/100 pixel
MAX_NAME_CHARS = 80
MAX_CATEGORIES = 1000
# 20 distinct hues as RGB: colour-blind-friendly first (Okabe-Ito, then Tableau), then ten of Kelly's
# colours of maximum contrast; layer i gets PALETTE[i % 20].
PALETTE = [
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (86, 180, 233),
    (213, 94, 0),
    (240, 228, 66),
    (148, 103, 189),
    (140, 86, 75),
    (127, 127, 127),
    (128, 62, 117),
    (166, 189, 215),
    (193, 0, 32),
    (206, 162, 98),
    (246, 118, 142),
    (83, 55, 122),
    (179, 40, 81),
    (127, 24, 13),
    (147, 170, 0),
    (35, 44, 22),
]


def hex_colour(rgb: tuple[int, int, int]) -> str:
    """ "#rrggbb" of an (r, g, b) colour."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _uid() -> str:
    return secrets.token_hex(6)


def clean_name(name) -> str:
    """An object's name as kept: control, format (bidi marks among them) and separator characters
    become spaces, runs of spaces one. Raises ValueError for a name that is not text or is longer
    than MAX_NAME_CHARS. Names are text everywhere: escaped in the page, slugged in file names."""
    if not isinstance(name, str):
        raise ValueError("an object's name must be text")
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in name)
    text = " ".join(text.split())
    if len(text) > MAX_NAME_CHARS:
        raise ValueError(f"a name takes at most {MAX_NAME_CHARS} characters; this one has {len(text)}")
    return text


@dataclass(frozen=True)
class ObjectPrompts:
    """One object: its prompts in original pixels (points: ((x, y, label), ...), label 1 or 0), or
    a fixed mask with none (loaded from a saved file: shown and exported as it was, not refined)."""

    points: tuple[tuple[float, float, int], ...] = ()
    box_xyxy: tuple[float, float, float, float] | None = None
    candidate: int | None = None  # chosen multimask candidate; None = best by predicted IoU
    name: str = ""  # the user's name for the object ("": "Object N"), as `clean_name` keeps it
    hidden: bool = False  # not drawn over the photo (still listed and exported)
    fixed: FixedMask | None = None  # the object's mask when it has no prompts (then points and box are empty)
    category: str = ""  # one of the session's categories ("": none), as `clean_name` keeps it

    @property
    def has_prompts(self) -> bool:
        return bool(self.points) or self.box_xyxy is not None

    @property
    def is_empty(self) -> bool:
        """Neither prompts nor a fixed mask: an object still to be clicked."""
        return not self.has_prompts and self.fixed is None

    @property
    def multimask(self) -> bool:
        return len(self.points) == 1 and self.box_xyxy is None

    def endpoint_columns(self) -> dict:
        """This object's prompts as one endpoint request row's list columns (one group)."""
        return {
            "input_points": [[[x, y] for x, y, _ in self.points]] if self.points else None,
            "input_labels": [[label for _, _, label in self.points]] if self.points else None,
            "input_boxes": [list(self.box_xyxy)] if self.box_xyxy else None,
            "multimask_output": self.multimask,
        }


@dataclass(frozen=True)
class ObjectResult:
    """Decoder output for one object's prompts, kept compact: the low-res logits, not the masks.

    low_res: (C, h, w) float32 logits, the rows and columns of the 256x256 low-res frame that the
    image covers (`SamEngine.decode_low_res` without `full_frame`); scores: (C,) float32 predicted
    IoU. Full-size masks are made from the logits when asked for, exactly as `SamEngine.decode`
    makes them (`exact` and `geometry` are the engine's and the image's).
    """

    prompts: ObjectPrompts
    low_res: np.ndarray
    scores: np.ndarray
    geometry: ImageGeometry
    exact: bool
    uid: str = field(default_factory=_uid)  # names this decode (the masks); kept when only the choice changes

    @property
    def masks(self) -> np.ndarray:
        """(C, H, W) bool in original pixels, made on each access (a few ms per mask)."""
        return masks_from_logits(torch.from_numpy(self.low_res), self.geometry, exact=self.exact)

    def display_mask(self, size_hw: tuple[int, int]) -> np.ndarray:
        """The chosen mask as (h, w) uint8 0/1 at `size_hw`, straight from its logits."""
        return logits_to_size(self.low_res[self.chosen], self.geometry, size_hw)

    @property
    def chosen(self) -> int:
        c = self.prompts.candidate
        return c if c is not None and c < len(self.scores) else int(np.argmax(self.scores))

    @property
    def mask(self) -> np.ndarray:
        """The chosen mask, (H, W) bool in original pixels."""
        k = self.chosen
        return masks_from_logits(torch.from_numpy(self.low_res[k : k + 1]), self.geometry, exact=self.exact)[0]

    @property
    def logits(self) -> np.ndarray:
        """The chosen mask's (H, W) float32 logits in original pixels; `mask` is exactly `logits > 0`."""
        k = self.chosen
        low_res = torch.from_numpy(self.low_res[k : k + 1])
        return masks_from_logits(low_res, self.geometry, return_logits=True, exact=self.exact)[0]

    @property
    def score(self) -> float:
        return float(self.scores[self.chosen])

    @property
    def nbytes(self) -> int:
        return self.low_res.nbytes + self.scores.nbytes


@dataclass(frozen=True)
class Decoded:
    """One decoder call made ahead of an edit (the hover preview's): the prompts it was made for, its
    low-res logits (C, h, w) float32 (as `ObjectResult`'s) and scores (C,). `Session.update` uses it instead of
    decoding when the edited object's prompts come to equal these."""

    prompts: ObjectPrompts
    low_res: np.ndarray
    scores: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.low_res.nbytes + self.scores.nbytes


@dataclass(frozen=True)
class FixedMask:
    """A mask shown without prompts to edit: loaded from a saved JSON, or from "segment everything".

    rle: the mask as pycocotools' compressed RLE ({"size": [H, W], "counts": bytes}); `mask`
    decodes it. `FixedMask.of` makes one from a bool mask.
    """

    rle: dict
    score: float  # predicted IoU
    label: str
    uid: str = field(default_factory=_uid)

    @classmethod
    def of(cls, mask: np.ndarray, score: float, label: str) -> FixedMask:
        """From an (H, W) bool mask."""
        return cls(encode_rle(mask), float(score), label)

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, decoded on each access."""
        return decode_rle(self.rle)

    @property
    def area(self) -> int:
        return int(mask_utils.area(self.rle))

    @property
    def nbytes(self) -> int:
        return len(self.rle["counts"])

    def display_mask(self, size_hw: tuple[int, int]) -> np.ndarray:
        """(h, w) uint8 0/1 at `size_hw`."""
        return mask_to_size(self.mask, size_hw)


@dataclass(frozen=True)
class Layer:
    """One entry of what the user sees: a shown mask (or an object still without prompts).

    number: 1-based display number. source: the mask shown, None for an object with no prompt yet.
    prompts: None for automatic masks. key: changes whenever what is drawn for this layer changes
    (mask, colour, or being edited). object_index: the object's index in `Session.objects` (None for
    automatic masks). colour: its colour's index in PALETTE: its category's (the category list's
    order), else its number's.
    """

    number: int
    name: str
    source: ObjectResult | FixedMask | None
    prompts: ObjectPrompts | None
    active: bool
    key: str
    object_index: int | None = None
    colour: int = 0

    @property
    def hidden(self) -> bool:
        return self.prompts is not None and self.prompts.hidden

    @property
    def score(self) -> float | None:
        return None if self.source is None else self.source.score

    @property
    def category(self) -> str:
        return "" if self.prompts is None else self.prompts.category

    @property
    def label(self) -> str:
        """What the object is, for datasets: its category, else the name given to it, else "object"."""
        given = "" if self.prompts is None else self.prompts.name
        return self.category or given or "object"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return PALETTE[self.colour % len(PALETTE)]

    @property
    def hex(self) -> str:
        return hex_colour(self.rgb)


@dataclass(frozen=True)
class SavedObject:
    """An object read from a saved file: its mask as saved, its name ("" for none), when the file
    holds them (our own Download JSON) the prompts that made it (else None), and whether it was hidden.
    A detection box (COCO without a segmentation, YOLO detection) has no mask (None) and its box as
    prompts: SAM segments it here."""

    mask: FixedMask | None
    name: str = ""
    prompts: ObjectPrompts | None = None
    hidden: bool = False
    category: str = ""


class Snapshot(NamedTuple):
    """What undo and redo restore: the objects, which one is edited, the automatic masks with the
    indices of those kept, and the category list."""

    objects: list[ObjectPrompts]
    active: int
    auto_masks: list[FixedMask]
    auto_keep: tuple[int, ...]
    categories: tuple[str, ...]


@dataclass
class Session:
    """Per-user state. `objects[active]` is the one being edited (the last, unless another was selected).

    image_bytes: the uploaded file as sent (exported as the request's base64 image).
    embedding_key: the image's key in the engine's embedding cache (`engine.image_key` of its pixels).
    size_hw: (H, W) of the image, EXIF orientation applied. token: changes with every new image.
    results: object index -> its last decode, for objects with prompts (absent after `light()`,
      remade by `update`).
    auto_masks / auto_keep: "segment everything" results and the indices the user keeps (shown
      before the objects).
    categories: the category list (carried to the next image); objects name theirs.
    workspace: the token of its `Workspace` when it is one of a set of images (workspace.py).
    undo_stack / redo_stack: the `Snapshot`s that undo and redo restore.
    """

    image_bytes: bytes
    embedding_key: str
    size_hw: tuple[int, int]
    name: str = "image"
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))  # unguessable; names the session
    objects: list[ObjectPrompts] = field(default_factory=lambda: [ObjectPrompts()])
    active: int = 0  # index of the edited object in `objects`
    results: dict[int, ObjectResult] = field(default_factory=dict)
    auto_masks: list[FixedMask] = field(default_factory=list)
    auto_keep: tuple[int, ...] = ()
    categories: tuple[str, ...] = ()  # the dataset's category list, in order (keys 1-9 pick from it)
    workspace: str | None = None  # the token of the workspace this image is one of (None: a single image)
    undo_stack: list[Snapshot] = field(default_factory=list)
    redo_stack: list[Snapshot] = field(default_factory=list)
    consumed_events: int = 0
    notes: list[str] = field(default_factory=list, repr=False)  # what this edit did that shows no mask
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)  # shared by all forks

    @classmethod
    def start(cls, image_bytes: bytes, embedding: ImageEmbedding, name: str = "image") -> Session:
        """A new session on an uploaded file and its embedding (from `engine.embed` of its pixels)."""
        return cls(image_bytes, embedding.key, tuple(embedding.geometry.original_hw), name)

    def pixels(self, max_pixels: int) -> np.ndarray:
        """The image as (H, W, 3) uint8 RGB, decoded again from its file (not kept)."""
        return to_rgb_array(decode_image_bytes(self.image_bytes, max_pixels), max_pixels)

    def embedding(self, engine: SamEngine) -> ImageEmbedding:
        """The image's embedding: from the engine's cache, or encoded again if it was evicted."""
        return engine.embed_by_key(self.embedding_key, lambda: self.pixels(engine.max_pixels), self.size_hw)

    @property
    def object_count(self) -> int:
        """Objects made (prompted or loaded) and automatic masks kept: what the set's strip counts."""
        return sum(not o.is_empty for o in self.objects) + len(self.auto_keep)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays this state holds (the file, logits, fixed masks' RLE, each counted
        once however many undo steps hold it)."""
        fixed = {}
        for snapshot in [self._snapshot()] + self.undo_stack + self.redo_stack:
            fixed.update((id(f), f) for f in snapshot.auto_masks)
            fixed.update((id(o.fixed), o.fixed) for o in snapshot.objects if o.fixed is not None)
        return (
            len(self.image_bytes) + sum(r.nbytes for r in self.results.values()) + sum(f.nbytes for f in fixed.values())
        )

    def light(self) -> Session:
        """A fork without the decoded results (prompts, file and fixed masks kept); `update` remakes them."""
        light = self.fork()
        light.results = {}
        return light

    def fork(self) -> Session:
        """A copy whose containers can change without touching this one (arrays are shared).

        Handlers edit a fork and return it, so a failed edit leaves the stored state intact.
        """
        return replace(
            self,
            objects=list(self.objects),
            results=dict(self.results),
            auto_masks=list(self.auto_masks),
            undo_stack=list(self.undo_stack),
            redo_stack=list(self.redo_stack),
            notes=[],  # an edit (on a fork) tells only what it did
        )

    # ---- edits: each is one undoable action ------------------------------------------------
    def _snapshot(self) -> Snapshot:
        return Snapshot(list(self.objects), self.active, self.auto_masks, self.auto_keep, self.categories)

    def _edit(
        self,
        objects: list[ObjectPrompts],
        active: int | None = None,
        auto: tuple | None = None,
        categories: tuple[str, ...] | None = None,
    ) -> None:
        """Make `objects` (and `active`, default: the same index, within the list; `auto`, the
        automatic masks and the indices kept; `categories`; default: as they are) the state, undoably."""
        active = min(self.active if active is None else active, len(objects) - 1)
        auto = (self.auto_masks, self.auto_keep) if auto is None else (list(auto[0]), tuple(auto[1]))
        categories = self.categories if categories is None else tuple(categories)
        state = Snapshot(objects, active, *auto, categories)
        if state == self._snapshot():
            return  # nothing changes: no undo step, and what redo would bring back is kept
        self.undo_stack = (self.undo_stack + [self._snapshot()])[-MAX_HISTORY:]
        self.redo_stack = []
        self.objects, self.active, self.auto_masks, self.auto_keep, self.categories = state

    @property
    def edited(self) -> ObjectPrompts:
        """The prompts of the object being edited."""
        return self.objects[self.active]

    def _with_edited(self, prompts: ObjectPrompts) -> list[ObjectPrompts]:
        return self.objects[: self.active] + [prompts] + self.objects[self.active + 1 :]

    def _object(self, index) -> int:
        """`index` as an object's index; ValueError if there is no such object."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"an object is given by its index, a whole number, not {index!r:.20}")
        if index < 0:
            raise ValueError(f"there is no object at index {index}: objects are numbered from index 0")
        if index >= len(self.objects):
            raise ValueError(f"there is no object {index + 1}; the list has {len(self.objects)}")
        return index

    def _prompt(self, prompts: ObjectPrompts) -> None:
        """Make `prompts` (the edited object's, with a new point or box) the edited object's, undoably.
        A fixed mask has no prompts to refine: then the click or box starts a new object instead."""
        if self.edited.fixed is None:
            if prompts.hidden:  # a prompt shows the object it refines, or the user would see nothing
                prompts = replace(prompts, hidden=False)
                self.notes.append(f"{self._name(self.active)} shown again")
            self._edit(self._with_edited(prompts))
        else:
            self._edit(self.objects + [replace(prompts, name="", hidden=False, fixed=None)], len(self.objects))

    def add_point(self, x: float, y: float, label: int) -> None:
        self._prompt(self.with_point(x, y, label))

    def with_point(self, x: float, y: float, label: int) -> ObjectPrompts:
        """The edited object's prompts with one more point (rounded as stored), not applied (the
        prompts of a new object if the edited one is a fixed mask).

        Raises ValueError for a point off the image (or not finite) and past the point limit.
        """
        if points_outside(np.array([x, y], dtype=np.float64), self.size_hw):  # also NaN
            h, w = self.size_hw
            raise ValueError(f"the click at ({x:.6g}, {y:.6g}) is outside the {w}x{h} image")
        active = self.edited if self.edited.fixed is None else ObjectPrompts()
        if len(active.points) >= MAX_POINTS_PER_OBJECT:
            raise ValueError(
                f"an object takes at most {MAX_POINTS_PER_OBJECT} points; click + New object to start another, or Undo"
            )
        point = (round(float(x), COORD_DECIMALS), round(float(y), COORD_DECIMALS), int(label))
        return replace(active, points=active.points + (point,), candidate=None)

    def set_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        h, w = self.size_hw
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):  # NaN would pass the clamps below
            raise ValueError(f"the box ({x0}, {y0}, {x1}, {y1}) has a corner that is not a finite number")
        x0, x1 = sorted((min(max(x0, 0.0), w), min(max(x1, 0.0), w)))
        y0, y1 = sorted((min(max(y0, 0.0), h), min(max(y1, 0.0), h)))
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ValueError("the box has zero size; drag a larger box, or click for a point")
        box = tuple(round(v, COORD_DECIMALS) for v in (x0, y0, x1, y1))
        active = self.edited if self.edited.fixed is None else ObjectPrompts()
        self._prompt(replace(active, box_xyxy=box, candidate=None))

    def apply_events(self, events: list) -> list[str]:
        """Apply the prompt surface's events not applied yet (`events[consumed_events:]`).

        events: the browser's whole list for this image, each {"type": "point", "x", "y", "label"}
        or {"type": "box", "x0", "y0", "x1", "y1"} in original pixels, {"type": "candidate",
        "index"} (the multimask candidate to show), {"type": "new"} (New object: in the same stream as
        the clicks, so a tap right after it goes to the new object), or for the object list {"type": "select" |
        "delete", "object": index}, {"type": "rename", "object", "name"}, {"type": "visibility",
        "object", "hidden": bool}, {"type": "category", "object", "category": a listed one or ""},
        {"type": "categories", "names": [str]} (the category list). Returns a message per event that was skipped as malformed or not
        applicable; the others are applied in order. An event given as None (JSON null) is skipped:
        the page keeps only the places of the events applied before it last left this image.
        """
        if not isinstance(events, list):
            return ["the prompt surface sent malformed data; reload the page"]
        if len(events) > MAX_EVENTS:
            return [f"more than {MAX_EVENTS} clicks on one image; upload it again to start afresh"]
        if len(events) - self.consumed_events > MAX_NEW_EVENTS:
            return [
                f"{len(events) - self.consumed_events:,} new prompt events at once, more than the {MAX_NEW_EVENTS} "
                "one edit takes; reload the page"
            ]
        problems = []
        for event in events[self.consumed_events :]:
            if event is None:  # the place of an event applied before the page last left this image
                continue
            try:
                if event.get("type") == "box":
                    self.set_box(float(event["x0"]), float(event["y0"]), float(event["x1"]), float(event["y1"]))
                elif event.get("type") == "candidate":
                    self.select_candidate(_whole(event["index"]))
                elif event.get("type") == "new":
                    self.new_object()
                elif event.get("type") == "select":
                    self.select(event["object"])
                elif event.get("type") == "delete":
                    self.delete(event["object"])
                elif event.get("type") == "rename":
                    self.rename(event["object"], event["name"])
                elif event.get("type") == "visibility":
                    self.set_hidden(event["object"], event["hidden"])
                elif event.get("type") == "category":
                    self.set_category(event["object"], event["category"])
                elif event.get("type") == "categories":
                    self.set_categories(event["names"])
                else:
                    self.add_point(float(event["x"]), float(event["y"]), 1 if _whole(event.get("label", 1)) == 1 else 0)
            except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
                problems.append(
                    str(exc) if isinstance(exc, ValueError) else f"a malformed prompt event was skipped: {event!r:.80}"
                )
        self.consumed_events = max(self.consumed_events, len(events))
        return problems

    def select_candidate(self, index: int) -> None:
        active = self.edited
        if not active.multimask:
            raise ValueError("candidates are offered for a single click only")
        if index not in (0, 1, 2):
            raise ValueError(f"there are 3 candidates, numbered 0 to 2; got {index}")
        self._edit(self._with_edited(replace(active, candidate=int(index))))

    def new_object(self) -> None:
        if self.edited.is_empty:
            raise ValueError("the current object has no prompt yet; click on the image first")
        self._edit(self.objects + [ObjectPrompts()], len(self.objects))

    def select(self, index) -> None:
        """Edit object `index` again: the next click refines it. Not an edit of its own (undo does not
        step through selections); an object with no prompt that was being edited is dropped."""
        index = self._object(index)
        if index == self.active:
            return
        if self.edited.is_empty:
            del self.objects[self.active]
            self._forget_result(self.active)
            index -= index > self.active
        self.active = index

    def _forget_result(self, index: int) -> None:
        """Drop object `index`'s result; the later objects' move down one, as the objects do."""
        self.results = {k - (k > index): v for k, v in self.results.items() if k != index}

    def delete(self, index) -> None:
        """Delete object `index`, undoably (undo brings it back, masks and name too)."""
        index = self._object(index)
        self.notes.append(f"{self._name(index)} deleted (Undo brings it back)")
        objects = self.objects[:index] + self.objects[index + 1 :] or [ObjectPrompts()]
        # The edited object keeps being edited; deleting it moves to the one that took its place.
        active = self.active - (self.active > index) if index != self.active else min(index, len(objects) - 1)
        self._forget_result(index)
        self._edit(objects, active)

    def rename(self, index, name) -> None:
        self._change(index, name=clean_name(name))

    def set_category(self, index, category) -> None:
        """Give object `index` one of the list's categories ("" takes it away), undoably."""
        category = clean_name(category)
        if category and category not in self.categories:
            raise ValueError(f"the category {category!r:.90} is not in the list; add it to the category list first")
        self._change(index, category=category)

    def set_categories(self, names) -> None:
        """Make `names` the category list (cleaned; blank and repeated ones dropped), undoably; an
        object whose category is no longer listed keeps it, shown as not in the list."""
        if not isinstance(names, list) or len(names) > MAX_CATEGORIES:
            raise ValueError(f"the category list takes at most {MAX_CATEGORIES} names, one per line")
        cleaned = tuple(dict.fromkeys(n for n in (clean_name(name) for name in names) if n))
        self._edit(list(self.objects), categories=cleaned)

    def set_hidden(self, index, hidden) -> None:
        if not isinstance(hidden, bool):
            raise ValueError("visibility takes hidden: true or false")
        self._change(index, hidden=hidden)
        self.notes.append(f"{self._name(self._object(index))} " + ("hidden (still exported)" if hidden else "shown"))

    def _name(self, index: int) -> str:
        """Object `index`'s name as the list shows it."""
        return next(layer.name for layer in self.layers() if layer.object_index == index)

    def _change(self, index, **fields) -> None:
        """Change fields of object `index`'s prompts (not its inputs: its masks stay), undoably."""
        index = self._object(index)
        objects = list(self.objects)
        objects[index] = replace(objects[index], **fields)
        self._edit(objects)

    def clear_object(self) -> None:
        """Take the edited object's prompts (or fixed mask) away, keeping its name, undoably."""
        if self.edited.is_empty:
            raise ValueError(f"{self.edited_layer().name} has no prompt to clear; click on the image to add one")
        self._edit(self._with_edited(ObjectPrompts(name=self.edited.name)))

    def start_over(self) -> None:
        """Take every object and every kept automatic mask away, undoably (one undo brings all back)."""
        if all(o.is_empty for o in self.objects) and not self.auto_keep:
            raise ValueError("there is nothing to start over from: no object and no kept automatic mask")
        self._edit([ObjectPrompts()], 0, auto=(self.auto_masks, ()))

    def set_auto(self, masks: list[FixedMask]) -> None:
        """Show a "segment everything" run's masks, all kept, in place of the last run's; undoably
        (a run that found none, after none, changes nothing)."""
        if masks or self.auto_masks:
            self._edit(list(self.objects), auto=(masks, range(len(masks))))

    def keep_auto(self, indices) -> None:
        """Show the automatic masks at `indices` (into `auto_masks`) and no others, undoably."""
        keep = tuple(sorted({int(i) for i in indices}))
        if any(not 0 <= i < len(self.auto_masks) for i in keep):
            raise ValueError(f"there are {len(self.auto_masks)} automatic masks; no mask {keep[-1] + 1}")
        if keep != self.auto_keep:
            self._edit(list(self.objects), auto=(self.auto_masks, keep))

    def add_saved(
        self, engine: SamEngine, saved: list[SavedObject], categories: tuple[str, ...] = ()
    ) -> tuple[int, int, int]:
        """Add a saved file's objects, undoably (one step): each whose prompts give its saved mask
        on this image with this engine as an object to refine (prompts, the candidate that gives it,
        name and category), the others as fixed masks with their names and categories; a mask
        already shown is skipped. They go before the edited object while it has no prompt yet (so it
        stays last and edited), else after the others. `categories` (the file's list) and the
        objects' categories join the category list where they are not in it yet.

        Boxes to segment (no mask) are added as objects with their box, but for a box and category an
        object has already (the same file loaded twice). Returns (restored with prompts or boxes, added as fixed
        masks, skipped as already shown).
        """
        self.update(engine)
        shown = {_rle_key(layer.source) for layer in self.shown()}
        box_keys = {  # a box to segment is a new object unless one has the same box and category
            (o.box_xyxy, o.category)
            for o in self.objects
            if o.fixed is None and not o.points and o.box_xyxy is not None
        }
        added, results, boxes = [], {}, 0
        for item in saved:
            if item.mask is None:  # a box to segment: decoded by `update` with the others
                if (item.prompts.box_xyxy, clean_name(item.category)) in box_keys:
                    continue
                box_keys.add((item.prompts.box_xyxy, clean_name(item.category)))
                boxes += 1
                kept = dict(name=clean_name(item.name), hidden=item.hidden, category=clean_name(item.category))
                added.append(replace(item.prompts, fixed=None, **kept))
                continue
            key = _rle_key(item.mask)
            if key in shown:
                continue
            shown.add(key)
            name, category = clean_name(item.name), clean_name(item.category)
            kept = dict(name=name, hidden=item.hidden, category=category)
            if item.prompts is not None and item.prompts.has_prompts:
                prompts = replace(item.prompts, fixed=None, **kept)
                try:
                    result = self._remade(engine, prompts, item.mask.mask)
                except ValueError:  # prompts this image cannot take (off it, say): kept as a fixed mask
                    result = None
                if result is not None:
                    results[len(added)] = result
                    added.append(result.prompts)
                    continue
            added.append(ObjectPrompts(fixed=item.mask, **kept))
        listed = tuple(dict.fromkeys([*self.categories, *map(clean_name, categories), *(o.category for o in added)]))
        listed = tuple(c for c in listed if c)
        if len(listed) > MAX_CATEGORIES:
            raise ValueError(
                f"with its categories the category list would hold {len(listed):,} names; it takes at most {MAX_CATEGORIES:,}"
            )
        if added or listed != self.categories:
            at = self.active if self.edited.is_empty and self.active == len(self.objects) - 1 else len(self.objects)
            objects = self.objects[:at] + added + self.objects[at:]
            self._edit(objects, self.active + len(added) * (at <= self.active), categories=listed)
            self.results = {k + len(added) * (k >= at): v for k, v in self.results.items()}
            self.results.update({at + k: result for k, result in results.items()})
        if boxes:
            self.update(engine)
        return len(results) + boxes, len(added) - len(results) - boxes, len(saved) - len(added)

    def _remade(self, engine: SamEngine, prompts: ObjectPrompts, mask: np.ndarray) -> ObjectResult | None:
        """The result of `prompts` if it shows exactly `mask` (a lone click: whichever candidate
        does, unless the prompts name one), else None."""
        embedding = self.embedding(engine)
        low_res, scores = decode(engine, embedding, prompts)
        result = ObjectResult(prompts, low_res, scores, embedding.geometry, engine.exact_upscale)
        candidates = [prompts.candidate] if not prompts.multimask or prompts.candidate is not None else range(3)
        for k in candidates:
            chosen = replace(result, prompts=replace(prompts, candidate=k if prompts.multimask else None))
            if k is not None and k >= len(scores):
                continue
            if np.array_equal(chosen.mask, mask):
                return chosen
        return None

    def undo(self) -> bool:
        return self._step(self.undo_stack, self.redo_stack)

    def redo(self) -> bool:
        return self._step(self.redo_stack, self.undo_stack)

    def _step(self, source: list[Snapshot], target: list[Snapshot]) -> bool:
        """Restore the last state of `source`, saving the current one on `target`."""
        if not source:
            return False
        target.append(self._snapshot())
        self.objects, self.active, self.auto_masks, self.auto_keep, self.categories = source.pop()
        return True

    # ---- results ---------------------------------------------------------------------------
    def update(self, engine: SamEngine, ready: Decoded | None = None) -> int:
        """Decode every object whose prompts changed since its last result; return the count.

        ready: a decode already made for some prompts (same engine, same image), used as is.
        """
        decoded = 0
        embedding = None
        for i, prompts in enumerate(self.objects):
            cached = self.results.get(i)
            if not prompts.has_prompts:
                self.results.pop(i, None)
                continue
            if cached is not None and _same_inputs(cached.prompts, prompts):
                if cached.prompts != prompts:  # only the chosen candidate changed
                    self.results[i] = replace(cached, prompts=prompts)
                continue
            if embedding is None:
                embedding = self.embedding(engine)
            if ready is not None and _same_inputs(ready.prompts, prompts):
                low_res, scores = ready.low_res, ready.scores
            else:
                low_res, scores = decode(engine, embedding, prompts)
                decoded += 1
            self.results[i] = ObjectResult(prompts, low_res, scores, embedding.geometry, engine.exact_upscale)
        for i in [k for k in self.results if k >= len(self.objects)]:
            del self.results[i]
        return decoded

    def edited_layer(self) -> Layer:
        """The layer of the object being edited (as `layers` numbers and colours it)."""
        return next(layer for layer in self.layers() if layer.active)

    def finished_results(self) -> list[tuple[int, ObjectResult]]:
        """(object index, result) for every object with prompts, in order."""
        return [(i, self.results[i]) for i, p in enumerate(self.objects) if p.has_prompts and i in self.results]

    def shown(self) -> list[Layer]:
        """Every layer with a mask (hidden ones too), in display order: what the exports hold."""
        return [layer for layer in self.layers() if layer.source is not None]

    def export_labels(self) -> list[str]:
        """The label of each layer the exports hold (`shown` once `update` has run: every automatic
        mask kept, every object with a fixed mask or with prompts), read without decoding."""
        return [
            layer.label
            for layer in self.layers()
            if layer.source is not None or (layer.prompts is not None and layer.prompts.has_prompts)
        ]

    def layers(self) -> list[Layer]:
        """Everything shown, in display order: the kept automatic masks, then every object (the
        edited one among them; objects with a fixed mask are shown by it).

        The one place that numbers and colours what is on screen: the mask layers, the markers,
        the score tags and the legend all read it.
        """
        auto = [self.auto_masks[i] for i in self.auto_keep]
        out = [Layer(n, f"{f.label} {n}", f, None, False, f"{f.uid}.{n}", colour=n - 1) for n, f in enumerate(auto, 1)]
        active = self.active
        for i, prompts in enumerate(self.objects):
            n, edited = len(auto) + i + 1, i == active
            colour = self.categories.index(prompts.category) if prompts.category in self.categories else n - 1
            if prompts.fixed is not None:
                source, key, default = prompts.fixed, prompts.fixed.uid, f"{prompts.fixed.label} {n}"
            else:
                source = self.results.get(i) if prompts.has_prompts else None
                key = f"{source.uid}.{source.chosen}" if source else "empty"
                default = f"Object {n}"
            key = f"{key}.{n}.{colour}.{int(edited)}"
            out.append(Layer(n, prompts.name or default, source, prompts, edited, key, i, colour))
        return out


def decode(engine: SamEngine, embedding: ImageEmbedding, prompts: ObjectPrompts) -> tuple[np.ndarray, np.ndarray]:
    """One object's decoder call: low-res logits (C, h, w) over the image (see `ObjectResult`) and scores (C,), float32 numpy."""
    low_res, iou = engine.decode_low_res(embedding, *decoder_arrays(prompts), None, prompts.multimask, full_frame=False)
    return low_res[0].cpu().numpy(), iou[0].cpu().numpy()


def decoder_arrays(prompts: ObjectPrompts) -> tuple:
    """(points_xy (1, N, 2) float64, labels (1, N), boxes_xyxy (1, 4) float64), None where absent."""
    cols = prompts.endpoint_columns()
    return (
        None if cols["input_points"] is None else np.array(cols["input_points"], dtype=np.float64),
        None if cols["input_labels"] is None else np.array(cols["input_labels"]),
        None if cols["input_boxes"] is None else np.array(cols["input_boxes"], dtype=np.float64),
    )


def _rle_key(source: ObjectResult | FixedMask) -> tuple:
    """A mask's identity for finding it shown twice: its size and compressed RLE."""
    rle = source.rle if isinstance(source, FixedMask) else encode_rle(source.mask)
    return tuple(rle["size"]), rle["counts"]


def _same_inputs(a: ObjectPrompts, b: ObjectPrompts) -> bool:
    return a.points == b.points and a.box_xyxy == b.box_xyxy


def _whole(value) -> int:
    """A prompt event's whole number as the page sends it (an int); TypeError for anything else (a
    string of 5,000 digits made int() answer in its own words)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value
