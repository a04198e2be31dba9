"""The Gradio web demo: upload, click or drag, see SAM's masks, download them.

- `layout.py`: `build_demo()` (the `gr.Blocks`), and mounting it beside other routes;
- `components.py`: the prompt surface, the upload box and the panels (with `static/` JS and CSS);
- `handlers.py`: the event handlers, plain functions that tests call without a server;
- `space_api.py`: the Space's `/segment` and `/segment_everything` API;
- `routes.py`: the demo's HTTP routes outside Gradio (the click fast path, hover preview, downloads);
- `session.py`, `session_store.py`: one user's objects and history, and the bounded store of them;
- `render.py`: what the page draws; `detail.py`: what a zoomed-in page draws sharp; `exports.py`: the downloads;
- `example_photos.py`: the example photos (`examples/`) and their thumbnails.

The only subpackage that imports gradio. May import: `sam_demo.endpoint`, `sam_demo.engine`.
"""

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent / "examples"  # the example photos: package data
