// The prompt surface of sam-demo (runs as gr.HTML's js_on_load: element, props, watch are given).
// Left click: positive point. Right click, shift+click or the toggle: negative point.
// Left drag: box. Coordinates are sent in original image pixels.
// A click (or a candidate chosen in the candidates panel): POST sam-demo/edit {token, events}, the
// fast path: the server applies and decodes the new events and answers with the view. Only if
// that fails, props.value = the same JSON fires Gradio's .change, which does the edit itself and
// reports what was wrong. Events only grow until the image changes, so no click is lost: Python
// applies the events it has not seen.
// A view (the fast path's answer, or props.view from Python): JSON {token, consumed, w, h, order,
// active, png, points, boxes, tags, panels}: the browser keeps one <img> per mask layer
// and gets PNGs only for layers it does not have yet; a view is shown once all its layers are at
// hand, and its panels (status line, legend, export links: HTML) go to the page's Panel
// components through a "sam-demo:view" event on the document.
// Each view's `controls` ({element id: reason}) dims the page's buttons that cannot run now, the
// reason as their tooltip. Keys (never while a text field has focus; `?` lists them): N new
// object, Ctrl/Cmd+Z undo, Ctrl/Cmd+Shift+Z or Ctrl+Y redo, Esc cancels the box being drawn,
// C cycles the candidates, H toggles the hover preview, S segments everything, Delete/Backspace
// deletes the edited object. The object list (panel.js) selects, renames, hides and deletes.
// Hover preview (mouse only): POST sam-demo/preview {token, x, y} -> a faint PNG, or 204 if busy.
// Whenever new mask pixels are on screen it dispatches "sam-demo:painted" on #prompter,
// detail {kind: "click" | "preview"}.
const root = element.querySelector('.sd-root') || element;
const host = element.closest('#prompter') || element;
const canHover = window.matchMedia('(hover: hover) and (pointer: fine)').matches;
root.innerHTML = `
  <div class="sd-toolbar">
    <button type="button" class="sd-mode" aria-pressed="false" title="For touch screens: make taps subtract">Taps add <b>+ positive</b> points</button>
    <button type="button" class="sd-hover" aria-pressed="true" title="Show the mask a click would give under the resting mouse">Hover preview: on</button>
    <button type="button" class="sd-change" title="Open another photo (or drop or paste one on the image)">Change image</button>
    <button type="button" class="sd-keys-button" aria-expanded="false" title="Keyboard shortcuts (?)">Keys ?</button>
    <label class="sd-opacity" title="How strongly the masks are drawn over the photo">Masks
      <input type="range" min="0" max="100" step="5" value="100" aria-label="Mask opacity"></label>
    <span class="sd-hint"></span>
  </div>
  <div class="sd-keys" role="dialog" aria-label="Keyboard shortcuts" hidden>
    <b>Keyboard shortcuts</b>
    <table>
      <tr><td><kbd>N</kbd></td><td>new object</td></tr>
      <tr><td><kbd>Ctrl</kbd>/<kbd>⌘</kbd>+<kbd>Z</kbd></td><td>undo</td></tr>
      <tr><td><kbd>Ctrl</kbd>/<kbd>⌘</kbd>+<kbd>Shift</kbd>+<kbd>Z</kbd>, <kbd>Ctrl</kbd>+<kbd>Y</kbd></td><td>redo</td></tr>
      <tr><td><kbd>Esc</kbd></td><td>cancel the box being drawn; close this list</td></tr>
      <tr><td><kbd>C</kbd></td><td>next of the three candidates (after one click)</td></tr>
      <tr><td><kbd>H</kbd></td><td>hover preview on or off</td></tr>
      <tr><td><kbd>S</kbd></td><td>segment everything</td></tr>
      <tr><td><kbd>Delete</kbd>, <kbd>Backspace</kbd></td><td>delete the edited object (undo brings it back)</td></tr>
      <tr><td><kbd>?</kbd></td><td>show or hide this list</td></tr>
    </table>
  </div>
  <div class="sd-stage">
    <div class="sd-empty">Click here to upload an image, or paste, drop, or pick an example photo</div>
    <img class="sd-base" alt="image to segment" draggable="false">
    <div class="sd-layers"></div>
    <img class="sd-preview" alt="" draggable="false">
    <svg class="sd-marks" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="none"></svg>
  </div>`;
const stage = root.querySelector('.sd-stage');
const base = root.querySelector('.sd-base');
const layersBox = root.querySelector('.sd-layers');
const previewImg = root.querySelector('.sd-preview');
const svg = root.querySelector('.sd-marks');
const mode = root.querySelector('.sd-mode');
const hoverButton = root.querySelector('.sd-hover');
root.querySelector('.sd-hint').textContent = canHover
  ? 'Click: add · Right-click / Shift+click: subtract · Drag: box'
  : 'Tap: add · Toggle to subtract · Drag: box';
let token = null, events = [], view = {order: [], png: {}, points: [], boxes: [], tags: [], consumed: 0, w: 1, h: 1};
let negativeMode = false, drag = null;
const layers = new Map();  // key -> {img, ready}: every mask layer the browser holds
// Layers of the objects not being edited are flattened into one canvas, redrawn only when that set
// changes, so a click repaints two layers however many objects there are.
const flat = document.createElement('canvas');
flat.className = 'sd-layer';
let shownKeys = '', flatKeys = '', paintSeq = 0;

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

// Runs `fn` once the next frame (with what is in the DOM now) has been painted.
function afterPaint(fn) {
  requestAnimationFrame(() => {
    const channel = new MessageChannel();
    channel.port1.onmessage = fn;
    channel.port2.postMessage(null);
  });
}

function painted(kind) {
  host.dispatchEvent(new CustomEvent('sam-demo:painted', {bubbles: true, detail: {kind}}));
}

function setSrc(img, url) {
  if ((img.getAttribute('src') || '') === url) return;
  if (url) img.setAttribute('src', url); else img.removeAttribute('src');
}

function sync() {
  setSrc(base, props.image_url || '');
  stage.classList.toggle('has-image', !!props.image_url);
  let next;
  try { next = JSON.parse(props.view || '{}'); } catch (e) { return; }
  if (next.token !== token) {
    token = next.token;
    events = [];
    cancelPreview();
    // A new image (say, an example picked below the stage on a phone) is brought into view.
    const top = root.getBoundingClientRect().top;
    if (token && (top < 0 || top > window.innerHeight / 2)) root.scrollIntoView({block: 'start'});
  }
  showView(next);
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
  if (keys === shownKeys) return;
  shownKeys = keys;
  await new Promise((resolve) => afterPaint(() => { painted('click'); resolve(); }));
}

// Show the image as large as the column and the window's height below the stage's top allow (at
// least half the window), small images upscaled.
function fit() {
  if (props.image_url) {
    const w = view.w || 1, h = view.h || 1;
    const top = stage.getBoundingClientRect().top + window.scrollY;
    const height = Math.max(200, window.innerHeight * 0.5, window.innerHeight - top - 16);
    const scale = Math.min(Math.max(100, root.clientWidth) / w, height / h);
    base.style.width = Math.floor(w * scale) + 'px';
  } else {
    base.style.width = '';
  }
  draw();
}

// Dim the page's buttons that cannot run now, their reason as the tooltip (a click on one still
// reaches the server, which says the same on the status line). The buttons may not be on the page
// yet when the first view comes: try again shortly.
let controlsWanted = {}, controlsTimer = null;
function applyControls(controls, tries = 40) {
  controlsWanted = controls;
  clearTimeout(controlsTimer);
  let missing = false;
  for (const [id, why] of Object.entries(controlsWanted)) {
    const button = document.getElementById(id);
    if (!button) { missing = true; continue; }
    if (why) { button.setAttribute('aria-disabled', 'true'); button.title = why; }
    else { button.removeAttribute('aria-disabled'); button.removeAttribute('title'); }
  }
  if (missing && tries > 0) controlsTimer = setTimeout(() => applyControls(controlsWanted, tries - 1), 250);
}

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
  const k = w / Math.max(1, base.clientWidth || w);  // original pixels per screen pixel
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

function toImage(ev) {
  const r = base.getBoundingClientRect();
  const w = view.w || 1, h = view.h || 1;
  return {x: clamp((ev.clientX - r.left) * w / r.width, 0, w), y: clamp((ev.clientY - r.top) * h / r.height, 0, h),
          sx: ev.clientX, sy: ev.clientY};
}

function send(e) {
  events.push(e);
  draw();
  const message = JSON.stringify({token, events});
  fetch('sam-demo/edit', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: message})
    .then((response) => (response.ok ? response.json() : null))
    .then((next) => (next && next.token === token ? showView(next).then(() => false) : true))
    .catch(() => true)
    .then((failed) => { if (failed) props.value = message; });
}

// ---- hover preview: at most one request in flight; the newest position waits, older ones are
// replaced; a result older than one already shown, or arriving after a click, is discarded.
// A position is asked for once the mouse has rested REST_MS (so a click right after a move does
// not share the server with a preview), or every MOVING_MS while it keeps moving.
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

// New images go through the upload component (#image-input, hidden by the page's CSS once it holds
// an image, so the photo is shown once): the empty stage and "Change image" open its file picker,
// and a file dropped on the stage or pasted on the page is handed to it.
const uploadInput = () => document.querySelector('#image-input input[type=file]');
root.querySelector('.sd-empty').addEventListener('click', () => uploadInput()?.click());
root.querySelector('.sd-change').addEventListener('click', () => uploadInput()?.click());
function upload(files) {
  const input = uploadInput();
  const file = [...(files || [])].find((f) => f.type.startsWith('image/')) || (files || [])[0];
  if (!input || !file) return false;
  const transfer = new DataTransfer();
  transfer.items.add(file);
  input.files = transfer.files;
  input.dispatchEvent(new Event('change', {bubbles: true}));
  return true;
}
stage.addEventListener('dragover', (ev) => { ev.preventDefault(); stage.classList.add('dropping'); });
stage.addEventListener('dragleave', () => stage.classList.remove('dropping'));
stage.addEventListener('drop', (ev) => {
  ev.preventDefault();
  stage.classList.remove('dropping');
  upload(ev.dataTransfer && ev.dataTransfer.files);
});
document.addEventListener('paste', (ev) => {
  if (ev.target.closest && ev.target.closest('input, textarea, [contenteditable]')) return;
  if (upload(ev.clipboardData && ev.clipboardData.files)) ev.preventDefault();
});
stage.addEventListener('contextmenu', (ev) => ev.preventDefault());
stage.addEventListener('pointerdown', (ev) => {
  if (!props.image_url || !token) return;
  ev.preventDefault();
  cancelPreview();
  stage.setPointerCapture(ev.pointerId);
  const p = toImage(ev);
  drag = {start: p, end: p, button: ev.button, negative: ev.button === 2 || ev.shiftKey || negativeMode, moved: false};
});
stage.addEventListener('pointermove', (ev) => {
  if (!drag) {
    if (hoverOn && ev.pointerType === 'mouse' && !ev.shiftKey && props.image_url && token) wantPreview(toImage(ev));
    return;
  }
  drag.end = toImage(ev);
  if (drag.button === 0 && Math.hypot(drag.end.sx - drag.start.sx, drag.end.sy - drag.start.sy) > 5) drag.moved = true;
  if (drag.moved) draw();
});
stage.addEventListener('pointerup', (ev) => {
  if (!drag) return;  // also after Esc cancelled the box being drawn
  const d = drag;
  drag = null;
  const p = toImage(ev);
  if (d.moved) send({type: 'box', x0: d.start.x, y0: d.start.y, x1: p.x, y1: p.y});
  else send({type: 'point', x: d.start.x, y: d.start.y, label: d.negative ? 0 : 1});
});
stage.addEventListener('pointercancel', () => { drag = null; draw(); });
stage.addEventListener('pointerleave', () => { if (!drag) cancelPreview(); });
document.addEventListener('sam-demo:candidate', (event) => {
  if (token) send({type: 'candidate', index: event.detail.index});
});
document.addEventListener('sam-demo:object', (event) => {
  if (token) send(event.detail);
});
// New object goes in the same ordered stream as the clicks (a tap right after it must land on the
// new object, which a separate Gradio event could apply after the tap). Before an image, the
// button's own event answers why it cannot run.
document.addEventListener('click', (event) => {
  if (!token || !event.target.closest || !event.target.closest('#new-object')) return;
  event.preventDefault();
  event.stopPropagation();
  send({type: 'new'});
}, true);
mode.addEventListener('click', () => {
  negativeMode = !negativeMode;
  mode.setAttribute('aria-pressed', String(negativeMode));
  mode.classList.toggle('negative', negativeMode);
  mode.innerHTML = negativeMode ? 'Taps add <b>− negative</b> points' : 'Taps add <b>+ positive</b> points';
});
// Mask opacity (0-100 % of the layers' own), kept for the next visit.
const opacity = root.querySelector('.sd-opacity input');
function setOpacity(percent) {
  opacity.value = String(percent);
  layersBox.style.opacity = String(percent / 100);
}
const storedOpacity = Number(localStorage.getItem('sam-demo-opacity') ?? 100);
setOpacity(Number.isFinite(storedOpacity) ? clamp(storedOpacity, 0, 100) : 100);
opacity.addEventListener('input', () => {
  setOpacity(Number(opacity.value));
  localStorage.setItem('sam-demo-opacity', opacity.value);
});
hoverButton.addEventListener('click', () => {
  setHover(!hoverOn);
  localStorage.setItem('sam-demo-hover', hoverOn ? 'on' : 'off');
});

// ---- keyboard shortcuts (listed in the `?` overlay)
const keysBox = root.querySelector('.sd-keys');
const keysButton = root.querySelector('.sd-keys-button');
function showKeys(open) {
  keysBox.hidden = !open;
  keysButton.setAttribute('aria-expanded', String(open));
}
keysButton.addEventListener('click', () => showKeys(keysBox.hidden));
const pressButton = (id) => document.getElementById(id)?.click();
function nextCandidate() {
  const buttons = [...document.querySelectorAll('#candidates [data-candidate]')];
  if (!buttons.length || !token) return;
  const current = buttons.findIndex((b) => b.getAttribute('aria-pressed') === 'true');
  send({type: 'candidate', index: Number(buttons[(current + 1) % buttons.length].dataset.candidate)});
}
document.addEventListener('keydown', (ev) => {
  const target = ev.target;
  if (ev.isComposing || (target.closest && target.closest('input, textarea, select, [contenteditable]'))) return;
  const key = ev.key.toLowerCase(), mod = ev.ctrlKey || ev.metaKey;
  let act = null;
  if (mod && !ev.altKey && key === 'z') act = () => pressButton(ev.shiftKey ? 'redo' : 'undo');
  else if (mod && !ev.altKey && key === 'y') act = () => pressButton('redo');
  else if (key === 'escape') act = () => { if (drag) { drag = null; draw(); } else showKeys(false); };
  else if (mod || ev.altKey) return;
  else if (ev.key === '?') act = () => showKeys(keysBox.hidden);
  else if (key === 'n') act = () => pressButton('new-object');
  else if (key === 'c') act = nextCandidate;
  else if (key === 'h' && canHover) act = () => hoverButton.click();
  else if (key === 's') act = () => pressButton('segment-everything');
  else if ((key === 'delete' || key === 'backspace') && token) act = () => send({type: 'delete', object: view.active_object ?? 0});
  if (!act) return;
  ev.preventDefault();
  act();
});
setHover(hoverOn);
new ResizeObserver(fit).observe(root);
window.addEventListener('resize', fit);
watch(['image_url', 'view'], sync);
sync();
