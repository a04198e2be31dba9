"""The example photos offered in the empty stage: their files (package data, `examples/`), captions and thumbnails."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from pathlib import Path

from PIL import Image

from sam_demo.demo import EXAMPLES
from sam_demo.demo.render import data_uri
from sam_demo.engine.sam_engine import SamEngine

LOG = logging.getLogger(__name__)

__all__ = ["CAPTIONS", "example_cards", "example_file", "example_photos", "warm_up"]

CAPTIONS = {  # file -> what it shows (see examples/LICENSE.md); others are captioned by their name
    "astronaut.png": "Astronaut",
    "chelsea.png": "Cat",
    "coffee.png": "Coffee cup",
    "rocket.jpg": "Rocket launch",
}
THUMB_WH = (240, 168)  # twice the CSS size, for sharp thumbnails on 2x screens


def example_photos() -> list[Path]:
    """The example photos' paths, sorted by name."""
    return sorted(p for p in EXAMPLES.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def example_file(name: str) -> Path | None:
    """The example photo called `name`, or None if there is none (only the listed files are served)."""
    return next((p for p in example_photos() if p.name == name), None)


def example_cards() -> str:
    """The prompter's `examples` prop: JSON [{"name", "caption", "thumb": JPEG data URI}], one per photo."""
    cards = []
    for path in example_photos():
        with Image.open(path) as image:
            thumb = image.convert("RGB")
        thumb.thumbnail(THUMB_WH)
        buffer = io.BytesIO()
        thumb.save(buffer, "JPEG", quality=85)
        caption = CAPTIONS.get(path.name, path.stem.replace("_", " ").capitalize())
        cards.append({"name": path.name, "caption": caption, "thumb": data_uri("image/jpeg", buffer.getvalue())})
    return json.dumps(cards)


def warm_up(engine: SamEngine, pause_s: float = 0.2) -> threading.Thread:
    """Encode the example photos on a background thread, the first first: the encoder's first run
    (its kernels warmed), the measure of this machine's encode time that the page shows, and every
    example ready to click (from the embedding store at once, after a first start with one).

    At low priority: before each photo it waits until no other encode is running or waiting, so a
    user's upload waits for at most the one example being encoded, and never for the rest. A user
    who picks an example while it is being encoded joins that encode (the cache's single flight).
    Returns the started thread; a failure is logged, never raised.
    """

    def run() -> None:
        for path in example_photos():
            while engine.cache.computing:
                time.sleep(pause_s)
            try:
                with Image.open(path) as image:
                    embedding, computed = engine.embed_with_status(image)
            except (OSError, ValueError, RuntimeError) as exc:
                LOG.warning("warm-up: %s could not be encoded: %s", path.name, exc)
                continue
            source = "from the embedding store" if embedding.from_store else "encoded" if computed else "cached"
            LOG.info("warm-up: %s %s", path.name, source)
        if engine.encode_seconds is not None:
            LOG.info("warm-up: an encode takes %.1f s here", engine.encode_seconds)

    thread = threading.Thread(target=run, name="sam-warm-up", daemon=True)
    thread.start()
    return thread
