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

from sam_demo.demo.handlers import DemoContext, View, _refused, _view, on_image, open_image
from sam_demo.demo.render import plural
from sam_demo.demo.session import Session
from sam_demo.demo.workspace import Workspace, WorkspaceImage, image_label, read_uploads

__all__ = ["WorkspaceView", "on_add_images", "on_pick", "on_step", "on_tick", "on_upload", "workspace_view"]

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
            (image_label(i, n, image, encoded(image), _objects(ctx, image)), i)
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


def _objects(ctx: DemoContext, image: WorkspaceImage) -> int | None:
    """The objects of an opened image, as its latest state holds them (None: never opened)."""
    if image.session is None:
        return None
    state = ctx.sessions.get(image.session.token) or image.session
    return sum(not o.is_empty for o in state.objects) + len(state.auto_keep)


def on_upload(ctx: DemoContext, path: str | None, session: Session | None, progress=gr.Progress()):
    """An image uploaded, pasted, dropped or picked: added to the workspace and opened when there is
    one; else in place of the image shown (as without a workspace)."""
    if path and _workspace(ctx, session) is not None:
        return on_add_images(ctx, [path], session, progress)
    view = on_image(ctx, path, session, progress)
    return (*view, *workspace_view(ctx, view.state))


def on_add_images(ctx: DemoContext, paths: list[str] | None, session: Session | None, progress=gr.Progress()):
    """Images added to the workspace (many files at once, or zips of them), the first new one
    opened; the image shown before stays in the set with its objects. Files that are not images, or
    past the limits, are named on the status line; the others are added."""
    paths = [p for p in (paths or []) if p]
    if not paths:
        return (
            *_view(ctx, session, "Ready." if session else "Upload an image to start."),
            *workspace_view(ctx, session),
        )
    files, problems = [], []
    for path in paths:
        name = Path(path).name
        if os.path.getsize(path) > ctx.limits.max_bytes:
            problems.append(f"{name}: over {ctx.limits.max_bytes >> 20} MB (--max-upload-mb)")
            continue
        files.append((name, Path(path).read_bytes()))
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
    note = f"Added {plural(len(images), 'image')}" + (f" (not added: {told})" if told else "") + ". "
    view = _open(ctx, workspace, first, session, progress, note)
    if ctx.background is not None:
        ctx.background.add(workspace)
    if problems:
        gr.Warning(note)
    return (*view, *workspace_view(ctx, view.state))


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
            categories = current.categories
            at = workspace.index_of(current.token)
            if at is not None:
                workspace.images[at].session = current.light()
        workspace.current = index
        image = workspace.images[index]
        kept = image.session
    n = len(workspace.images)
    note = f"{note}Image {index + 1} of {n}: {image.name}. "
    if kept is None:
        view = open_image(ctx, image.data, image.name, categories, progress, workspace.token, note)
        with workspace.lock:
            image.session = view.state
        return view
    target = (ctx.sessions.get(kept.token) or kept).fork()
    target.categories = tuple(dict.fromkeys([*categories, *target.categories]))
    try:
        rgb = target.pixels(ctx.engine.max_pixels)
    except (ValueError, RuntimeError) as exc:
        return _refused(ctx, session, f"{image.name} cannot be shown: {exc}")
    objects = sum(not o.is_empty for o in target.objects)
    return _view(ctx, target, f"{note}{plural(objects, 'object')}; click to add or refine.", new_image=rgb)
