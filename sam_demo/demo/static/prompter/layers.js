// layers.js: what the stage draws from each view, JSON {token, consumed, w, h, order, active, png,
// points, boxes, tags, panels, controls} (the click fast path's answer, or props.view from Python).
// The browser keeps one <img> per mask layer and gets PNGs only for layers it does not have yet; a
// view is shown once all its layers are at hand, and its panels (status line, candidates, object
// list, export links: HTML) go to the page's Panel components through a "sam-demo:view" event.
// Layers of the objects not being edited are flattened into one canvas, redrawn only when that set
// changes, so a click repaints two layers however many objects there are.
// Zoomed in past the display layers' resolution, the stage asks for the visible region's layers at
// the screen's resolution (POST sam-demo/detail) and for the full-resolution photo (GET
// sam-demo/photo/{token}), and shows them over the region once all have come; until then, and
// while the view moves, the display layers show.
// Whenever new mask pixels are on screen it dispatches "sam-demo:painted" on #prompter, detail
// {kind: "click" | "preview" | "detail"}, and "image" once another image (a new upload, or the next
// of a set) is on screen.
const layers = new Map();  // key -> {img, ready}: every mask layer the browser holds
const flat = document.createElement('canvas');
flat.className = 'sd-layer';
let shownKeys = '', flatKeys = '', paintSeq = 0;

function sync() {
  setSrc(base, props.image_url || '');
  stage.classList.toggle('has-image', !!props.image_url);
  let next;
  try { next = JSON.parse(props.view || '{}'); } catch (e) { return; }
  if (next.token !== token) {
    token = next.token;
    // The image's session has applied `consumed` events already (before the page left it, in a set):
    // their places are kept, so that the new ones come after them, where it looks.
    events = new Array(next.consumed || 0).fill(null);
    cancelPreview();
    resetZoomLayers();
    t = SdView.FIT;
    if (token) {
      bringIntoView();
      base.decode().then(() => afterPaint(() => painted('image')), () => {});
    }
  }
  showView(next);
}

// A new image (say, an example picked on a phone) is brought into view: where the bar holds the
// edits (a phone or a narrow window) the status line goes to the top of the screen, so the image
// follows it at once; on a wide screen only if the stage is out of sight.
function bringIntoView() {
  const status = document.getElementById('status') || root;
  const top = status.getBoundingClientRect().top;
  if (compact.matches ? Math.abs(top) > 8 : top < 0 || top > window.innerHeight / 2) status.scrollIntoView({block: 'start'});
}

// Decode the new layers off screen, then swap them in together with the markers; resolves once
// they are painted.
async function showView(next) {
  if (next.token === view.token && (next.consumed || 0) < (view.consumed || 0)) return;  // older than what is shown
  if ((next.order || []).some((key) => !layers.has(key) && !(next.png && next.png[key]))) return;  // the other channel brings it
  const seq = ++paintSeq;
  for (const key of next.order || []) {
    if (!layers.has(key) && next.png && next.png[key]) {
      const img = new Image();
      img.className = 'sd-layer';
      img.draggable = false;
      img.alt = '';
      img.src = next.png[key];
      layers.set(key, {img, ready: img.decode().catch(() => {})});
    }
  }
  await Promise.all((next.order || []).map((key) => layers.get(key)?.ready));
  if (seq !== paintSeq) return;  // a newer view came meanwhile; it paints
  view = next;
  document.dispatchEvent(new CustomEvent('sam-demo:view', {detail: next.panels || {}}));
  applyControls(next.controls || {});
  const order = (next.order || []).filter((key) => layers.has(key));
  for (const key of [...layers.keys()]) if (!order.includes(key)) layers.delete(key);
  const active = order.includes(next.active) ? next.active : null;
  const rest = order.filter((key) => key !== active);
  if (rest.join(' ') !== flatKeys) {
    flatKeys = rest.join(' ');
    const first = rest.length ? layers.get(rest[0]).img : null;
    flat.width = first ? first.naturalWidth : 1;  // also clears it
    flat.height = first ? first.naturalHeight : 1;
    const g = flat.getContext('2d');
    for (const key of rest) g.drawImage(layers.get(key).img, 0, 0, flat.width, flat.height);
  }
  layersBox.replaceChildren(...(rest.length ? [flat] : []), ...(active ? [layers.get(active).img] : []));
  fit();
  const keys = order.join(' ');
  showDetail();  // the display layers, until the region's sharp ones for this order come
  scheduleDetail(0);
  if (keys === shownKeys) return;
  shownKeys = keys;
  await new Promise((resolve) => afterPaint(() => { painted('click'); resolve(); }));
}

// ---- zoomed in: the region's layers at screen resolution, and the full-resolution photo
const DETAIL_OVER = 1.25;  // asked for once a display pixel is drawn this many screen pixels wide
const DETAIL_REST_MS = 120, DETAIL_BUSY_MS = 150;
const detail = {region: '', imgs: new Map(), inflight: false, again: false, timer: null, photoAsked: false};  // again: false or a delay (ms)

function resetZoomLayers() {
  detail.region = '';
  detail.imgs = new Map();
  detail.photoAsked = false;
  clearTimeout(detail.timer);
  photo.hidden = true;
  photo.removeAttribute('src');
  showDetail();
}

// The region the viewport shows now and the size to draw it at, or null when the display layers
// are sharp enough.
function wantedRegion() {
  if (!token || !props.image_url) return null;
  const {vw, vh} = viewport();
  const dpr = window.devicePixelRatio || 1;
  const layerW = Math.min(view.w || 1, base.naturalWidth || view.w || 1);
  if (SdView.magnification(vw, t.z, dpr, layerW) <= DETAIL_OVER) return null;
  const region = SdView.visibleRegion(t, vw, vh, view.w, view.h);
  const size = SdView.detailSize(vw, vh, dpr, MAX_DETAIL_PIXELS);
  return {region, size, key: [...region.map((v) => v.toFixed(3)), ...size].join(',')};
}

// The view moved: show the display layers until the new region's come.
function zoomChanged() {
  showDetail();
  scheduleDetail(DETAIL_REST_MS);
}

function scheduleDetail(delay) {
  clearTimeout(detail.timer);
  detail.timer = setTimeout(requestDetail, delay);
}

function requestDetail() {
  const want = wantedRegion();
  if (!want) return;
  askPhoto();
  if (want.key !== detail.region) { detail.region = want.key; detail.imgs = new Map(); }
  const order = (view.order || []).filter((key) => layers.has(key));
  const missing = order.filter((key) => !detail.imgs.has(key));
  if (!missing.length) { showDetail(); return; }
  if (detail.inflight) { detail.again = DETAIL_BUSY_MS; return; }
  detail.inflight = true;
  const asked = {token, region: want.key};
  // At most MAX_DETAIL_LAYERS a request: with more objects, the rest are asked for in turn.
  const keys = missing.slice(0, MAX_DETAIL_LAYERS);
  fetch('sam-demo/detail', {method: 'POST', headers: {'Content-Type': 'application/json'},
                            body: JSON.stringify({token, region: want.region, size: want.size, keys})})
    .then(async (response) => {
      if (response.status === 204) { detail.again = DETAIL_BUSY_MS; return; }  // busy: ask again shortly
      if (!response.ok) return;
      const answer = await response.json();
      const imgs = Object.entries(answer.png || {}).map(([key, uri]) => {
        const img = new Image();
        img.className = 'sd-layer';
        img.draggable = false;
        img.alt = '';
        img.src = uri;
        return [key, img];
      });
      await Promise.all(imgs.map(([, img]) => img.decode().catch(() => {})));
      if (asked.token !== token || asked.region !== detail.region) return;  // the view moved meanwhile
      for (const [key, img] of imgs) detail.imgs.set(key, img);
      if (showDetail()) afterPaint(() => painted('detail'));
      else if (missing.length > keys.length) detail.again = 0;  // the next ones at once
    })
    .catch(() => {})
    .finally(() => {
      detail.inflight = false;
      if (detail.again !== false) { const delay = detail.again; detail.again = false; scheduleDetail(delay); }
    });
}

// Show the sharp layers if they are those of the view and region shown now (else the display
// layers); returns whether they are shown.
function showDetail() {
  const want = wantedRegion();
  const order = (view.order || []).filter((key) => layers.has(key));
  const ready = want && want.key === detail.region && order.length > 0 && order.every((key) => detail.imgs.has(key));
  if (ready) {
    const {vw, vh} = viewport();
    const [x0, y0, x1, y1] = want.region;
    const sx = vw / view.w, sy = vh / view.h;
    Object.assign(detailBox.style, {left: `${x0 * sx}px`, top: `${y0 * sy}px`,
                                    width: `${(x1 - x0) * sx}px`, height: `${(y1 - y0) * sy}px`});
    detailBox.replaceChildren(...order.map((key) => detail.imgs.get(key)));
  }
  detailBox.hidden = !ready;
  layersBox.style.visibility = ready ? 'hidden' : '';
  return !!ready;
}

// The photo at full resolution, once per image, shown over the display one when it has come.
function askPhoto() {
  if (detail.photoAsked || (base.naturalWidth || 0) >= (view.w || 0)) return;
  detail.photoAsked = true;
  const asked = token;
  const img = new Image();
  img.src = `sam-demo/photo/${encodeURIComponent(token)}`;
  img.decode().then(() => {
    if (asked !== token) return;
    photo.src = img.src;
    photo.hidden = false;
  }).catch(() => { detail.photoAsked = false; });
}

// ---- buttons that cannot run now are dimmed, their reason as the tooltip (a click on one still
// reaches the server, which says the same on the status line); the bar's copies of them too. The
// buttons may not be on the page yet when the first view comes: try again shortly.
let controlsWanted = {}, controlsTimer = null;
function applyControls(controls, tries = 40) {
  controlsWanted = controls;
  clearTimeout(controlsTimer);
  let missing = false;
  for (const [id, why] of Object.entries(controlsWanted)) {
    const button = document.getElementById(id);
    if (!button) { missing = true; continue; }
    for (const b of [button, ...root.querySelectorAll(`[data-press="${id}"]`)]) {
      if (why) { b.setAttribute('aria-disabled', 'true'); b.title = why; }
      else { b.removeAttribute('aria-disabled'); if (b === button) b.removeAttribute('title'); }
    }
  }
  if (missing && tries > 0) controlsTimer = setTimeout(() => applyControls(controlsWanted, tries - 1), 250);
}

// ---- markers (SVG in original pixels, drawn at a constant screen size at any zoom)
// A point: green + (adds) or red − (subtracts), white sign, a dark ring then a light one, so it shows
// on its own object's mask and on any photo (as in Meta's demo). A pending one is grey and dashed.
function point(x, y, label, k, pending) {
  const r = 8 * k, s = 4 * k, sw = 2 * k;
  const fill = pending ? '#888888' : label === 1 ? '#2ca02c' : '#d62728';
  const dash = pending ? ` stroke-dasharray="${2 * k} ${2 * k}"` : '';
  const bar = `<line x1="${x - s}" y1="${y}" x2="${x + s}" y2="${y}" stroke="#fff" stroke-width="${sw}"/>`;
  const stem = label === 1 ? `<line x1="${x}" y1="${y - s}" x2="${x}" y2="${y + s}" stroke="#fff" stroke-width="${sw}"/>` : '';
  return `<circle cx="${x}" cy="${y}" r="${r + sw}" fill="none" stroke="#000" stroke-opacity="0.7" stroke-width="${sw}"/>` +
         `<circle cx="${x}" cy="${y}" r="${r}" fill="${fill}" stroke="#fff" stroke-width="${sw}"${dash}/>${bar}${stem}`;
}

// A box: a dark halo, the object's colour, a light core, so it shows on its own mask and on any photo.
function rect(x0, y0, x1, y1, color, k, dashed) {
  const dash = dashed ? ` stroke-dasharray="${6 * k} ${4 * k}"` : '';
  const at = `x="${Math.min(x0, x1)}" y="${Math.min(y0, y1)}" width="${Math.abs(x1 - x0)}" height="${Math.abs(y1 - y0)}" fill="none"`;
  return `<rect ${at} stroke="#000" stroke-opacity="0.6" stroke-width="${5 * k}"${dash}/>` +
         `<rect ${at} stroke="${color}" stroke-width="${3 * k}"${dash}/>` +
         `<rect ${at} stroke="#fff" stroke-width="${1 * k}"${dash}/>`;
}

function draw() {
  const w = view.w || 1, h = view.h || 1;
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const k = w / Math.max(1, viewport().vw * t.z);  // original pixels per screen pixel
  let out = '';
  for (const [x0, y0, x1, y1, color] of view.boxes || []) out += rect(x0, y0, x1, y1, color, k, false);
  for (const [x, y, label] of view.points || []) out += point(x, y, label, k, false);
  for (const e of events.slice(view.consumed || 0)) {
    if (e.type === 'box') out += rect(e.x0, e.y0, e.x1, e.y1, '#ffffff', k, true);
    else if (e.type === 'point') out += point(e.x, e.y, e.label, k, true);
  }
  // Score tags: centred on the mask's innermost pixel, in the object's colour with black or white
  // text (whichever contrasts more, chosen by the server), a halo and a dark outline; kept on screen.
  for (const [x, y, text, color, ink] of view.tags || []) {
    const fs = 15 * k, pad = 3 * k, tw = text.length * fs * 0.6 + 2 * pad, th = fs + 2 * pad;
    const left = clamp(x - tw / 2, 0, Math.max(0, w - tw)), top = clamp(y - th / 2, 0, Math.max(0, h - th));
    const halo = ink === '#000000' ? '#ffffff' : '#000000';
    out += `<rect x="${left}" y="${top}" width="${tw}" height="${th}" rx="${3 * k}" fill="${color}" fill-opacity="0.92" stroke="#000" stroke-opacity="0.55" stroke-width="${k}"/>` +
           `<text x="${left + pad}" y="${top + pad + fs * 0.82}" font-size="${fs}" font-family="system-ui, sans-serif" font-weight="600" fill="${ink}" stroke="${halo}" stroke-opacity="0.35" stroke-width="${2 * k}" paint-order="stroke">${esc(text)}</text>`;
  }
  if (drag && drag.moved) out += rect(drag.start.x, drag.start.y, drag.end.x, drag.end.y, '#ffffff', k, true);
  svg.innerHTML = out;
}
