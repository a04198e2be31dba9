"""The Azure ML "mask-generation" endpoint twin (facebook/sam-vit-large), as the live service speaks it.

- `wire.py`: the request and response format, parsed and built (torch-free);
- `fetch.py`: image URLs, with SSRF and size guards; `settings.py`: `ServerConfig`;
- `scoring.py`: requests answered with a `SamEngine`;
- `http.py`: `POST /score` and `GET /health` for any `ApiBackend` (torch-free, so a Serve gateway
  can run it); `engine_backend.py`: the backend that computes in this process; `http_body.py`.

May import: `sam_demo.engine`, FastAPI; never the demo, batch or serve.
"""
