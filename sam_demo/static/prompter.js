// The prompt surface of sam-demo (runs as gr.HTML's js_on_load: element, props, watch are given).
// Left click: positive point. Right click, shift+click or the toggle: negative point.
// Left drag: box. Coordinates are sent in original image pixels.
// props.value (to Python): JSON {token, events}; events only grow until the image changes, so
// with trigger_mode "always_last" no click is lost: Python applies events it has not seen.
// props.markers (from Python): JSON {token, consumed, w, h, points, boxes, tags}.
const root = element.querySelector('.sd-root') || element;
root.innerHTML = `
  <div class="sd-toolbar">
    <button type="button" class="sd-mode" aria-pressed="false" title="For touch screens: make taps subtract">Taps add <b>+ positive</b> points</button>
    <span class="sd-hint">Click: add · Right-click / Shift+click: subtract · Drag: box</span>
  </div>
  <div class="sd-stage">
    <div class="sd-empty">Click here to upload an image, or paste, drop, or pick an example photo</div>
    <img class="sd-base" alt="image to segment" draggable="false">
    <img class="sd-overlay" alt="" draggable="false">
    <svg class="sd-marks" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="none"></svg>
  </div>`;
const stage = root.querySelector('.sd-stage');
const base = root.querySelector('.sd-base');
const overlay = root.querySelector('.sd-overlay');
const svg = root.querySelector('.sd-marks');
const mode = root.querySelector('.sd-mode');
let token = null, events = [], view = {points: [], boxes: [], tags: [], consumed: 0, w: 1, h: 1};
let negativeMode = false, drag = null;

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

function setSrc(img, url) {
  if ((img.getAttribute('src') || '') === url) return;
  if (url) img.setAttribute('src', url); else img.removeAttribute('src');
}

function sync() {
  setSrc(base, props.image_url || '');
  setSrc(overlay, props.overlay_url || '');
  stage.classList.toggle('has-image', !!props.image_url);
  try { view = Object.assign(view, JSON.parse(props.markers || '{}')); } catch (e) { /* keep the last view */ }
  if (view.token !== token) { token = view.token; events = []; }
  fit();
}

// Show the image as large as the column and 78% of the window allow, small images upscaled.
function fit() {
  if (props.image_url) {
    const w = view.w || 1, h = view.h || 1;
    const scale = Math.min(Math.max(100, root.clientWidth) / w, Math.max(200, window.innerHeight * 0.78) / h);
    base.style.width = Math.floor(w * scale) + 'px';
  } else {
    base.style.width = '';
  }
  draw();
}

function point(x, y, label, color, k, pending) {
  const r = 8 * k, s = 4 * k, sw = 2 * k;
  const fill = label === 1 ? color : '#d62728';
  const dash = pending ? ` stroke-dasharray="${2 * k} ${2 * k}"` : '';
  const bar = `<line x1="${x - s}" y1="${y}" x2="${x + s}" y2="${y}" stroke="#fff" stroke-width="${sw}"/>`;
  const stem = label === 1 ? `<line x1="${x}" y1="${y - s}" x2="${x}" y2="${y + s}" stroke="#fff" stroke-width="${sw}"/>` : '';
  return `<circle cx="${x}" cy="${y}" r="${r}" fill="${fill}" stroke="#fff" stroke-width="${sw}"${dash}/>${bar}${stem}`;
}

function rect(x0, y0, x1, y1, color, k, dashed) {
  const dash = dashed ? ` stroke-dasharray="${6 * k} ${4 * k}"` : '';
  return `<rect x="${Math.min(x0, x1)}" y="${Math.min(y0, y1)}" width="${Math.abs(x1 - x0)}" height="${Math.abs(y1 - y0)}"` +
         ` fill="none" stroke="${color}" stroke-width="${2.5 * k}"${dash}/>`;
}

function draw() {
  const w = view.w || 1, h = view.h || 1;
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const k = w / Math.max(1, base.clientWidth || w);  // original pixels per screen pixel
  let out = '';
  for (const [x0, y0, x1, y1, color] of view.boxes || []) out += rect(x0, y0, x1, y1, color, k, false);
  for (const [x, y, label, color] of view.points || []) out += point(x, y, label, color, k, false);
  for (const e of events.slice(view.consumed || 0)) {
    out += e.type === 'box' ? rect(e.x0, e.y0, e.x1, e.y1, '#ffffff', k, true) : point(e.x, e.y, e.label, '#888888', k, true);
  }
  for (const [x, y, text, color] of view.tags || []) {
    const fs = 15 * k, pad = 3 * k, tw = text.length * fs * 0.6 + 2 * pad;
    const ty = y < fs * 1.6 ? y + fs * 1.4 : y - pad;
    out += `<rect x="${x}" y="${ty - fs - pad / 2}" width="${tw}" height="${fs + 2 * pad}" rx="${3 * k}" fill="${color}" fill-opacity="0.9"/>` +
           `<text x="${x + pad}" y="${ty}" font-size="${fs}" font-family="system-ui, sans-serif" font-weight="600" fill="#fff">${esc(text)}</text>`;
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
  props.value = JSON.stringify({token, events});
}

// Before an image is loaded, the empty stage opens the file picker of the upload component.
root.querySelector('.sd-empty').addEventListener('click', () => {
  document.querySelector('#image-input input[type=file]')?.click();
});
stage.addEventListener('contextmenu', (ev) => ev.preventDefault());
stage.addEventListener('pointerdown', (ev) => {
  if (!props.image_url || !token) return;
  ev.preventDefault();
  stage.setPointerCapture(ev.pointerId);
  const p = toImage(ev);
  drag = {start: p, end: p, button: ev.button, negative: ev.button === 2 || ev.shiftKey || negativeMode, moved: false};
});
stage.addEventListener('pointermove', (ev) => {
  if (!drag) return;
  drag.end = toImage(ev);
  if (drag.button === 0 && Math.hypot(drag.end.sx - drag.start.sx, drag.end.sy - drag.start.sy) > 5) drag.moved = true;
  if (drag.moved) draw();
});
stage.addEventListener('pointerup', (ev) => {
  if (!drag) return;
  const d = drag;
  drag = null;
  const p = toImage(ev);
  if (d.moved) send({type: 'box', x0: d.start.x, y0: d.start.y, x1: p.x, y1: p.y});
  else send({type: 'point', x: d.start.x, y: d.start.y, label: d.negative ? 0 : 1});
});
stage.addEventListener('pointercancel', () => { drag = null; draw(); });
mode.addEventListener('click', () => {
  negativeMode = !negativeMode;
  mode.setAttribute('aria-pressed', String(negativeMode));
  mode.classList.toggle('negative', negativeMode);
  mode.innerHTML = negativeMode ? 'Taps add <b>− negative</b> points' : 'Taps add <b>+ positive</b> points';
});
new ResizeObserver(fit).observe(root);
window.addEventListener('resize', fit);
watch(['image_url', 'overlay_url', 'markers'], sync);
sync();
