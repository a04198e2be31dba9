"""The workspace's event handlers: add images (many at once, or zips), move between them (the strip,
`D` / `A`), and the strip's refresh while the background encodes. Plain functions, as in handlers.py;
each returns the usual `View` and the strip's `WorkspaceView`.

A single image works as before (a new upload replaces it). "Add images" makes a workspace of the
image shown and the new ones; from then on, a new upload is added to the set and opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import gradio as gr

from sam_demo.demo.exports import SavedFile, coco_objects, file_names, parse_saved_json, yolo_dataset_objects
from sam_demo.demo.handlers import (
    MAX_SAVED_BYTES,
    DemoContext,
    View,
    _refused,
    _view,
    on_image,
    on_load_saved,
    open_image,
    start_session,
)
from sam_demo.demo.render import plural
from sam_demo.demo.session import MAX_CATEGORIES, Session
from sam_demo.demo.workspace import Workspace, WorkspaceImage, image_label, read_uploads, read_yolo_uploads
from sam_demo.engine.utils.files import IMAGE_SUFFIXES, NotARegularFile, read_regular

__all__ = [
    "WorkspaceView",
    "on_add_folder",
    "on_add_images",
    "on_load",
    "on_pick",
    "on_remove",
    "on_step",
    "on_tick",
    "on_upload",
    "workspace_view",
]

TICK_SECONDS = 2.0  # the strip's refresh while a workspace is open


class WorkspaceView(NamedTuple):
    """The strip's outputs, after `View`'s: the images (#images), the background's progress
    (#workspace-progress), the refresh timer and the strip's row (shown with two images or more)."""

    images: dict
    progress: dict
    timer: dict
    row: dict


def _workspace(ctx: DemoContext, session: Session | None) -> Workspace | None:
    return None if session is None else ctx.workspaces.get(ctx.sessions.latest(session).workspace)


def workspace_view(ctx: DemoContext, session: Session | None) -> WorkspaceView:
    workspace = _workspace(ctx, session)
    if workspace is None:
        hidden = gr.update(visible=False)
        return WorkspaceView(gr.update(choices=[], value=None), gr.update(value=""), gr.update(active=False), hidden)
    encoded = ctx.background.encoded if ctx.background is not None else (lambda image: False)
    with workspace.lock:
        n = len(workspace.images)
        choices = [
            (image_label(i, n, image, encoded(image), _object_count(ctx, image)), i)
            for i, image in enumerate(workspace.images)
        ]
        current = workspace.current
        failed = sum(image.problem is not None for image in workspace.images)
        ready = sum(image.problem is None and encoded(image) for image in workspace.images)
    todo = n - failed - ready
    progress = f"{ready} of {n} images encoded" + (f", {todo} encoding in the background" if todo else "")
    if failed:
        progress += f"; {plural(failed, 'image')} cannot be encoded"
    return WorkspaceView(
        gr.update(choices=choices, value=current),
        gr.update(value=progress),
        gr.update(active=True),
        gr.update(visible=True),
    )


def _object_count(ctx: DemoContext, image: WorkspaceImage) -> int | None:
    state = image.latest(ctx.sessions)
    return None if state is None else state.object_count


def on_upload(ctx: DemoContext, path: str | None, session: Session | None, progress=gr.Progress()):
    """An image uploaded, pasted, dropped or picked: added to the workspace and opened when there is
    one, or when the image shown has objects (they are kept: the two images become a set); else in
    place of the image shown."""
    if path and _workspace(ctx, session) is not None:
        return on_add_images(ctx, [path], session, progress)
    if path and session is not None and (count := ctx.sessions.latest(session).object_count):
        kept = f"{session.name} and its {plural(count, 'object')} kept in a set with it (◀ goes back). "
        return _add_images(ctx, [path], session, progress, kept)
    view = on_image(ctx, path, session, progress)
    return (*view, *workspace_view(ctx, view.state))


def on_add_images(ctx: DemoContext, paths: list[str] | None, session: Session | None, progress=gr.Progress()):
    """Images added to the workspace (many files at once, or zips of them), the first new one
    opened; the image shown before stays in the set with its objects. Files that are not images, or
    past the limits, are named on the status line; the others are added."""
    return _add_images(ctx, paths, session, progress)


def _add_images(ctx: DemoContext, paths: list[str] | None, session: Session | None, progress, kept: str = ""):
    """`on_add_images`; `kept` goes after the status line's "Added ..." (what became of the image shown)."""
    paths = [p for p in (paths or []) if p]
    if not paths:
        return (
            *_view(ctx, session, "Ready." if session else "Upload an image to start."),
            *workspace_view(ctx, session),
        )
    files, problems = [], []
    for path in paths:
        name = Path(path).name
        try:
            files.append((name, read_regular(path, ctx.limits.max_bytes)))
        except NotARegularFile:
            problems.append(f"{name}: not a file")
        except ValueError:
            problems.append(f"{name}: over {ctx.limits.max_bytes >> 20} MB (--max-upload-mb)")
        except OSError as exc:
            problems.append(f"{name}: cannot be read ({exc.strerror or exc})")
    workspace = _workspace(ctx, session)
    if workspace is None:
        workspace = Workspace()
        if session is not None:  # the image shown becomes the set's first, with its objects
            current = ctx.sessions.latest(session).fork()
            current.workspace = workspace.token
            ctx.sessions.put(current)
            workspace.images.append(
                WorkspaceImage(current.name, current.image_bytes, current.size_hw, session=current.light())
            )
    with workspace.lock:
        held = (len(workspace.images), workspace.nbytes)
        names = {image.name.lower() for image in workspace.images}
    images, more = read_uploads(files, ctx.limits, held, ctx.engine.max_pixels, names)
    problems += more
    told = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    if not images:
        message = f"No image was added: {told}." if told else "No image was added."
        return (*_refused(ctx, session, message), *workspace_view(ctx, session))
    with workspace.lock:
        first = len(workspace.images)
        workspace.images += images
    ctx.workspaces.put(workspace)
    note = f"Added {plural(len(images), 'image')}" + (f" (not added: {told})" if told else "") + ". " + kept
    view = _open(ctx, workspace, first, session, progress, note)
    if ctx.background is not None:
        ctx.background.add(workspace)
    if problems:
        gr.Warning(note)
    return (*view, *workspace_view(ctx, view.state))


def on_add_folder(ctx: DemoContext, paths: list[str] | None, session: Session | None, progress=gr.Progress()):
    """A folder's images added to the set (as `on_add_images`), in name order; its other files
    (labels, notes) are skipped and counted, not each named."""
    paths = [p for p in (paths or []) if p]
    kept = sorted((p for p in paths if Path(p).suffix.lower() in (*IMAGE_SUFFIXES, ".zip")), key=lambda p: Path(p).name)
    if paths and not kept:
        message = (
            f"The folder holds no image files ({', '.join(IMAGE_SUFFIXES)}): {plural(len(paths), 'file')} skipped."
        )
        return (*_refused(ctx, session, message), *workspace_view(ctx, session))
    result = on_add_images(ctx, kept, session, progress)
    if len(kept) < len(paths):
        skipped = len(paths) - len(kept)
        gr.Info(f"Skipped {plural(skipped, 'file')} of the folder: {'not an image' if skipped == 1 else 'not images'}.")
    return result


def on_pick(ctx: DemoContext, index, session: Session | None, progress=gr.Progress()):
    """An image picked in the strip."""
    workspace = _workspace(ctx, session)
    if workspace is None or not isinstance(index, int) or not 0 <= index < len(workspace.images):
        return (*_refused(ctx, session, "Pick an image of the set."), *workspace_view(ctx, session))
    return (*_open(ctx, workspace, index, session, progress), *workspace_view(ctx, session))


def on_step(ctx: DemoContext, step: int, session: Session | None, progress=gr.Progress()):
    """The next (`D`) or previous (`A`) image of the set."""
    workspace = _workspace(ctx, session)
    if workspace is None:
        message = "There is one image: add images (many at once, or a zip) to move between them with D and A."
        return (*_refused(ctx, session, message), *workspace_view(ctx, session))
    with workspace.lock:
        index = workspace.current + step
        n = len(workspace.images)
    if not 0 <= index < n:
        edge = "last" if step > 0 else "first"
        return (*_refused(ctx, session, f"This is the {edge} image of the {n}."), *workspace_view(ctx, session))
    view = _open(ctx, workspace, index, session, progress)
    return (*view, *workspace_view(ctx, view.state))


def on_remove(ctx: DemoContext, confirmed, session: Session | None, progress=gr.Progress()):
    """Take the image shown out of the set (`confirmed`: the page asked, and the user said yes),
    its objects with it; the next image (else the previous one) opens."""
    workspace = _workspace(ctx, session)
    if workspace is None:
        return (
            *_refused(ctx, session, "This image is not one of a set: there is nothing to remove it from."),
            *workspace_view(ctx, session),
        )
    current = ctx.sessions.latest(session)
    if confirmed is not True:
        return (*_view(ctx, current.fork(), f"Kept {current.name} in the set."), *workspace_view(ctx, session))
    with workspace.lock:
        index = workspace.index_of(current.token)
        if index is None:
            return (*_refused(ctx, session, "This image is no longer in the set."), *workspace_view(ctx, session))
        try:
            removed = workspace.remove(index)
        except ValueError as exc:
            return (*_refused(ctx, session, f"{current.name} was not removed: {exc}."), *workspace_view(ctx, session))
        after = workspace.current
    ctx.sessions.discard(current.token)
    ctx.workspaces.put(workspace)  # its bytes are counted anew
    objects = f" and its {plural(current.object_count, 'object')}" if current.object_count else ""
    view = _open(ctx, workspace, after, current, progress, note=f"Removed {removed.name}{objects} from the set. ")
    if ctx.background is not None:
        ctx.background.add(workspace)  # the images after it moved up
    return (*view, *workspace_view(ctx, view.state))


def on_tick(ctx: DemoContext, session: Session | None) -> WorkspaceView:
    """The strip again: each image's state and the background's progress."""
    return workspace_view(ctx, session)


def _open(
    ctx: DemoContext, workspace: Workspace, index: int, session: Session | None, progress, note: str = ""
) -> View:
    """Show image `index` of the workspace: its session as it was left (remade from its light copy
    if the store let it go), else a new one (its encode found in the cache when the background has
    done it). The image shown before is kept in the set as it is now. The category list goes on."""
    categories: tuple[str, ...] = ()
    with workspace.lock:
        if session is not None:
            current = ctx.sessions.latest(session)
            ctx.jobs.cancel(current.token)  # segment everything on the image left stops
            categories = current.categories
            at = workspace.index_of(current.token)
            if at is not None:
                workspace.images[at].session = current.light()
        workspace.current = index
        image = workspace.images[index]
        opened = image.session is not None
    n = len(workspace.images)
    note = f"{note}Image {index + 1} of {n}: {image.name}. "
    if not opened:
        view = open_image(ctx, image.data, image.name, categories, progress, workspace.token, note)
        with workspace.lock:
            image.session = view.state
        return view
    target = image.latest(ctx.sessions).fork()
    target.categories = tuple(dict.fromkeys([*categories, *target.categories]))
    try:
        rgb = target.pixels(ctx.engine.max_pixels)
    except (ValueError, RuntimeError) as exc:
        return _refused(ctx, session, f"{image.name} cannot be shown: {exc}")
    status = f"{note}{plural(target.object_count, 'object')}; click to add or refine."
    return _view(ctx, target, status, new_image=rgb)


def on_load(ctx: DemoContext, paths: list[str] | str | None, session: Session | None, progress=gr.Progress()):
    """Load saved files. Into a set (the image shown is one of one): a COCO file, each of its images
    into the set's image of that name; YOLO label files (.txt, with a data.yaml or classes.txt for
    the class names, or a zip of them), each into the image of its stem. Anything else, or a
    lone label file matching no image of the set, into the image shown: one file at a time."""
    paths = [paths] if isinstance(paths, str) else [p for p in (paths or []) if p]
    workspace = _workspace(ctx, session)
    if workspace is not None and paths:
        body = _coco_body(paths[0]) if len(paths) == 1 else None
        if body is not None:
            view = _load_into_set(
                ctx, workspace, _coco_plans(workspace, body, Path(paths[0]).name[:80]), session, progress
            )
            return (*view, *workspace_view(ctx, view.state))
        if any(Path(p).suffix.lower() in YOLO_SUFFIXES for p in paths):
            view = _load_yolo(ctx, workspace, paths, session, progress)
            if view is None:  # one label file, named as no image of the set: into the image shown
                shown = ctx.sessions.latest(session).name
                view = on_load_saved(ctx, paths[0], session, f" into {shown} (it names no image of the set)")
            return (*view, *workspace_view(ctx, view.state))
    if len(paths) > 1:
        view = _refused(
            ctx,
            session,
            f"{len(paths)} files were chosen; load one saved file at a time into an image (YOLO label files "
            "for several images load together once the images are added as a set).",
        )
    else:
        view = on_load_saved(ctx, paths[0] if paths else None, session)
    return (*view, *workspace_view(ctx, view.state))


YOLO_SUFFIXES = (".txt", ".yaml", ".yml", ".zip")  # label files, class names, or a zip of a YOLO dataset


def _coco_body(path: str) -> dict | None:
    """The file's JSON if it is a COCO file (images, annotations, categories lists), else None."""
    if Path(path).suffix.lower() != ".json" or os.path.getsize(path) > MAX_SAVED_BYTES:
        return None
    try:
        body = parse_saved_json(Path(path).read_bytes())
    except ValueError:  # loaded into the image shown instead, which says what is wrong with it
        return None
    keys = ("images", "annotations", "categories")
    return body if isinstance(body, dict) and all(isinstance(body.get(k), list) for k in keys) else None


class _Plans(NamedTuple):
    """What a file adds to a set: per image of the set its objects, all checked (or `refused`: why
    nothing is added: the end of "<file> was not loaded..."), the file's name and what it holds
    that the set lacks."""

    file: str
    plans: list[tuple[WorkspaceImage, SavedFile]]
    unmatched: list[str]
    refused: str = ""


def _coco_plans(workspace: Workspace, body: dict, file: str) -> _Plans:
    """Each COCO image's annotations for the set's image of the same (base) name."""
    by_name: dict[str, dict] = {}
    for image in body["images"]:
        if isinstance(image, dict) and isinstance(image.get("file_name"), str):
            by_name.setdefault(Path(image["file_name"]).name, image)
    with workspace.lock:
        images = list(workspace.images)
    matched = [image for image in images if image.name in by_name]
    unmatched = [name for name in by_name if name not in {image.name for image in images}]
    if not matched:
        return _Plans(
            file, [], unmatched, f": none of its images ({_first_few(list(by_name))}) is in the set; add them first."
        )
    plans = []
    for image in matched:
        single = {**body, "images": [by_name[image.name]]}
        try:
            saved = coco_objects(single, image.size_hw, image.name)
        except ValueError as exc:
            return _Plans(file, [], unmatched, f" (nothing was added): {image.name}: {exc}")
        if saved.objects:
            plans.append((image, saved))
    if not plans:
        return _Plans(file, [], unmatched, ": it holds no annotation of the set's images.")
    return _Plans(file, plans, unmatched)


def _load_yolo(ctx: DemoContext, workspace: Workspace, paths: list[str], session: Session, progress) -> View | None:
    """YOLO label files into the set's images of their stems, all checked first; None (load into the
    image shown) for a lone label file that matches no image of the set."""
    what = Path(paths[0]).name[:80] if len(paths) == 1 else plural(len(paths), "file")
    not_loaded = f"{what} {'was' if len(paths) == 1 else 'were'} not loaded"
    try:
        labels = read_yolo_uploads([Path(p) for p in paths], MAX_SAVED_BYTES, 10 * ctx.limits.max_images)
    except ValueError as exc:
        return _refused(ctx, session, f"{not_loaded}: {exc}")
    with workspace.lock:
        images = list(workspace.images)
    # By the stem of the name the set's downloads give an image (same.png and same.jpg: same and
    # same_2; "photo (1).png": photo_1_), else of its own name.
    by_stem: dict[str, WorkspaceImage] = {}
    for file, image in zip(file_names([image.name for image in images]), images):
        by_stem.setdefault(Path(file).stem, image)
    for image in images:
        by_stem.setdefault(Path(image.name).stem, image)
    matched = [(by_stem[stem], where, text) for stem, (where, text) in labels.texts.items() if stem in by_stem]
    unmatched = [where for stem, (where, _) in labels.texts.items() if stem not in by_stem]
    if len(paths) == 1 and len(labels.texts) == 1 and not matched:
        return None  # one label file, of no image of the set: for the image shown, as without a set
    if not labels.texts:
        return _refused(
            ctx,
            session,
            f"{not_loaded}: it holds no YOLO label file (.txt, a line per object); a zip loads as YOLO "
            "labels, and a Download JSON or COCO file loads on its own.",
        )
    if not matched:
        return _refused(
            ctx,
            session,
            f"{not_loaded}: no label file ({_first_few(unmatched)}) is named as an image of the set is.",
        )
    if labels.names is not None and len(labels.names) > MAX_CATEGORIES:
        return _refused(
            ctx,
            session,
            f"{not_loaded}: its names list {len(labels.names):,} classes; a category list takes at most "
            f"{MAX_CATEGORIES:,}.",
        )
    listed = ctx.sessions.latest(session).categories
    plans = []
    for image, where, text in matched:
        try:
            saved = yolo_dataset_objects(text, image.size_hw, labels.names, listed)
        except ValueError as exc:
            return _refused(ctx, session, f"{not_loaded} (nothing was added): {where}: {exc}")
        if saved.objects:  # an empty label file: an image without objects
            plans.append((image, saved))
    if not plans:
        return _refused(ctx, session, f"{not_loaded}: its label files are empty (no line, no object).")
    return _load_into_set(ctx, workspace, _Plans(what, plans, unmatched), session, progress)


def _load_into_set(ctx: DemoContext, workspace: Workspace, plans: _Plans, session: Session, progress) -> View:
    """Each planned image's objects added, in one undo step per image; an image never opened is
    opened (encoded) for it. What the file holds that the set lacks is named."""
    if plans.refused:
        return _refused(ctx, session, f"{plans.file} was not loaded{plans.refused}")
    added, done = 0, []
    for k, (image, saved) in enumerate(plans.plans):
        progress((k, len(plans.plans)), desc=f"Adding the objects of {len(plans.plans)} images")
        try:
            state = _session_of(ctx, workspace, image, ctx.sessions.latest(session).categories)
            with ctx.sessions.editing(state) as full:
                before = ctx.sessions.latest(state)
                restored, fixed, _ = full.add_saved(ctx.engine, saved.objects, saved.categories)
                ctx.sessions.put(full)
        except (ValueError, RuntimeError) as exc:
            for earlier, other in done:  # nothing half-added: the images done so far as they were
                ctx.sessions.put(earlier)
                with workspace.lock:
                    other.session = earlier.light()
            return _refused(ctx, session, f"{plans.file} was not loaded (nothing was added): {image.name}: {exc}")
        done.append((before, image))
        added += restored + fixed
        with workspace.lock:
            image.session = full.light()
    status = f"Loaded from {plans.file}: {plural(added, 'object')} into {plural(len(plans.plans), 'image')} of the set."
    if plans.unmatched:
        status += f" Not in the set: {_first_few(plans.unmatched)}."
    gr.Info(status)
    return _view(ctx, ctx.sessions.latest(session).fork(), status)


def _first_few(names: list[str], most: int = 5) -> str:
    """The first `most` names, comma-separated, with ", ..." when there are more."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def _session_of(ctx: DemoContext, workspace: Workspace, image: WorkspaceImage, categories: tuple[str, ...]) -> Session:
    """The image's latest session (put back in the store if it had let it go); opened (its
    embedding found or encoded) if it never was."""
    state = image.latest(ctx.sessions)
    if state is not None:
        ctx.sessions.put(state)
        return state
    state = start_session(ctx, image.data, image.name, categories, workspace.token).session
    ctx.sessions.put(state)
    with workspace.lock:
        image.session = state.light()
    return state
