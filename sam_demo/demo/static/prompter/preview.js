// preview.js: the hover preview (mouse only): POST sam-demo/preview {token, x, y} -> a faint PNG of
// the mask a click there would give, or 204 while the server is busy. At most one request is in
// flight; the newest position waits, older ones are replaced; a result older than one already
// shown, or arriving after a click, is discarded. A position is asked for once the mouse has
// rested REST_MS (so a click right after a move does not share the server with a preview), or
// every MOVING_MS while it keeps moving.
const REST_MS = 30, MOVING_MS = 90, BUSY_RETRY_MS = 60;
let hoverOn = canHover && localStorage.getItem('sam-demo-hover') !== 'off';
const hover = {seq: 0, shown: 0, want: null, since: null, inflight: false, timer: null, url: null};

function setHover(on) {
  hoverOn = canHover && on;
  hoverButton.setAttribute('aria-pressed', String(hoverOn));
  hoverButton.textContent = `Hover preview: ${hoverOn ? 'on' : 'off'}`;
  hoverButton.hidden = !canHover;
  if (!hoverOn) cancelPreview();
}

function cancelPreview() {
  hover.want = null;
  hover.since = null;
  hover.shown = ++hover.seq;  // whatever is in flight is now stale
  clearTimeout(hover.timer);
  previewImg.removeAttribute('src');
  if (hover.url) URL.revokeObjectURL(hover.url);
  hover.url = null;
}

function wantPreview(p) {
  const now = performance.now();
  hover.want = {x: p.x, y: p.y, seq: ++hover.seq, at: now};
  if (hover.since === null) hover.since = now;
  pump();
}

function pump() {
  clearTimeout(hover.timer);
  if (hover.inflight || !hover.want || !token) return;
  const wait = Math.min(hover.want.at + REST_MS, hover.since + MOVING_MS) - performance.now();
  if (wait > 0) { hover.timer = setTimeout(pump, wait); return; }
  const req = hover.want;
  hover.want = null;
  hover.since = null;
  hover.inflight = true;
  fetch('sam-demo/preview', {method: 'POST', headers: {'Content-Type': 'application/json'},
                             body: JSON.stringify({token, x: req.x, y: req.y})})
    .then(async (response) => {
      if (response.status === 204) {  // the server is busy: try this position again shortly
        if (!hover.want && req.seq > hover.shown) {
          hover.timer = setTimeout(() => { if (!hover.want) { hover.want = req; hover.since = req.at; pump(); } }, BUSY_RETRY_MS);
        }
        return;
      }
      if (!response.ok) return;
      const blob = await response.blob();
      if (req.seq <= hover.shown) return;
      const url = URL.createObjectURL(blob);
      const img = new Image();
      img.src = url;
      await img.decode().catch(() => {});
      if (req.seq <= hover.shown) { URL.revokeObjectURL(url); return; }
      hover.shown = req.seq;
      previewImg.src = url;
      if (hover.url) URL.revokeObjectURL(hover.url);
      hover.url = url;
      afterPaint(() => painted('preview'));
    })
    .catch(() => {})
    .finally(() => { hover.inflight = false; pump(); });
}
