// The prompt surface of sam-demo (gr.HTML's js_on_load, given element, props and watch; made of
// view.js, stage.js, layers.js, preview.js and input.js, in that order, in one scope).
// stage.js: the page's parts, the shared state, and the stage: the image fitted to the column,
// zoomed and panned by the view transform `t` (view.js), with the bar under it.
// Props: image_url (the display JPEG), view (render.view_json), examples (JSON [{name, caption,
// thumb}]: shown inside the empty stage).
const root = element.querySelector('.sd-root') || element;
const host = element.closest('#prompter') || element;
const canHover = window.matchMedia('(hover: hover) and (pointer: fine)').matches;
// A phone or a narrow window: the bar under the image holds the edits (as prompter.css and PAGE_CSS say).
const compact = window.matchMedia('not ((hover: hover) and (pointer: fine) and (min-width: 900px))');
const MAX_DETAIL_PIXELS = 4200000, MAX_DETAIL_LAYERS = 24;  // detail.py's bounds
root.innerHTML = `
  <div class="sd-toolbar">
    <button type="button" class="sd-mode" aria-pressed="false"></button>
    <button type="button" class="sd-hover" aria-pressed="true" title="Show the mask a click would give under the resting mouse">Hover preview: on</button>
    <button type="button" class="sd-change" title="Open another photo (or drop or paste one on the image)">Change image</button>
    <button type="button" class="sd-keys-button" aria-expanded="false" title="Keyboard shortcuts (?)">Keys ?</button>
    <span class="sd-hint"></span>
  </div>
  <div class="sd-keys" role="dialog" aria-label="Keyboard shortcuts" hidden>
    <b>Keyboard shortcuts</b>
    <table>
      <tr><td><kbd>N</kbd></td><td>new object</td></tr>
      <tr><td><kbd>D</kbd> / <kbd>A</kbd></td><td>next / previous image of a set (added with "Add images")</td></tr>
      <tr><td><kbd>1</kbd>–<kbd>9</kbd></td><td>category of the edited object (the list's first nine)</td></tr>
      <tr><td><kbd>Ctrl</kbd>/<kbd>⌘</kbd>+<kbd>Z</kbd></td><td>undo</td></tr>
      <tr><td><kbd>Ctrl</kbd>/<kbd>⌘</kbd>+<kbd>Shift</kbd>+<kbd>Z</kbd>, <kbd>Ctrl</kbd>+<kbd>Y</kbd></td><td>redo</td></tr>
      <tr><td><kbd>Esc</kbd></td><td>cancel the box being drawn; close this list; else deselect (the next click starts a new object)</td></tr>
      <tr><td><kbd>C</kbd></td><td>next of the three candidates (after one click)</td></tr>
      <tr><td><kbd>H</kbd></td><td>hover preview on or off</td></tr>
      <tr><td><kbd>S</kbd></td><td>segment everything</td></tr>
      <tr><td><kbd>Delete</kbd>, <kbd>Backspace</kbd></td><td>delete the edited object (undo brings it back)</td></tr>
      <tr><td><kbd>+</kbd> <kbd>−</kbd>, wheel</td><td>zoom in or out about the mouse</td></tr>
      <tr><td><kbd>0</kbd></td><td>fit the whole image</td></tr>
      <tr><td><kbd>Space</kbd>+drag, middle-drag, arrows</td><td>pan</td></tr>
      <tr><td><kbd>?</kbd></td><td>show or hide this list</td></tr>
    </table>
  </div>
  <div class="sd-stage">
    <div class="sd-empty">
      <button type="button" class="sd-upload">Click to upload a photo<br><small>or drop or paste one here</small></button>
      <div class="sd-examples"></div>
    </div>
    <div class="sd-content">
      <img class="sd-base" alt="image to segment" draggable="false">
      <img class="sd-photo" alt="" draggable="false" hidden>
      <div class="sd-masks"><div class="sd-layers"></div><div class="sd-detail" hidden></div></div>
      <img class="sd-preview" alt="" draggable="false">
      <svg class="sd-marks" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="none"></svg>
    </div>
  </div>
  <div class="sd-bar" role="toolbar" aria-label="Zoom, mask opacity and edits">
    <button type="button" id="zoom-out" title="Zoom out (−)" aria-label="Zoom out">−</button>
    <button type="button" id="zoom-fit" title="The photo's scale; click to fit the whole image (0)">100%</button>
    <button type="button" id="zoom-in" title="Zoom in (+)" aria-label="Zoom in">+</button>
    <label class="sd-opacity" title="How strongly the masks are drawn over the photo">Masks
      <input type="range" min="0" max="100" step="5" value="100" aria-label="Mask opacity"></label>
    <span class="sd-bar-edit">
      <button type="button" data-press="undo" title="Undo (Ctrl+Z)">↶ Undo</button>
      <button type="button" data-press="redo" title="Redo (Ctrl+Shift+Z)">↷ Redo</button>
      <button type="button" data-press="new-object" class="sd-bar-new" title="Start another object (N)">+ New object</button>
    </span>
  </div>`;
const stage = root.querySelector('.sd-stage');
const content = root.querySelector('.sd-content');
const base = root.querySelector('.sd-base');
const photo = root.querySelector('.sd-photo');
const masksBox = root.querySelector('.sd-masks');
const layersBox = root.querySelector('.sd-layers');
const detailBox = root.querySelector('.sd-detail');
const previewImg = root.querySelector('.sd-preview');
const svg = root.querySelector('.sd-marks');
const mode = root.querySelector('.sd-mode');
const hoverButton = root.querySelector('.sd-hover');
const zoomLabel = root.querySelector('#zoom-fit');
root.querySelector('.sd-hint').textContent = canHover
  ? 'Click: add · Right-click / Shift+click: subtract · Drag: box · Wheel: zoom · Space+drag: pan'
  : 'Tap: add · Drag: box · Pinch: zoom · Two fingers: pan';
let token = null, events = [], view = {order: [], png: {}, points: [], boxes: [], tags: [], consumed: 0, w: 1, h: 1};
let t = SdView.FIT;  // the view transform (view.js)
let negativeMode = false;
let drag = null;  // the press being made: {start, end, button, negative, moved} (input.js)

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

// The viewport's size in CSS pixels (the fitted image's).
function viewport() {
  const r = stage.getBoundingClientRect();
  return {left: r.left, top: r.top, vw: r.width || 1, vh: r.height || 1};
}

function zMax() {
  return SdView.maxZoom(view.w || 1, viewport().vw);
}

// Show the transform: the content moves, the markers keep their screen size, and the sharp
// layers of the new region are asked for once it rests (layers.js).
function setTransform(next) {
  const {vw, vh} = viewport();
  const clamped = SdView.clampView(next, vw, vh, zMax());
  const moved = clamped.z !== t.z || clamped.tx !== t.tx || clamped.ty !== t.ty;
  t = clamped;
  content.style.transform = `translate(${t.tx}px, ${t.ty}px) scale(${t.z})`;
  stage.dataset.zoom = String(t.z);
  stage.classList.toggle('zoomed', t.z > 1);
  // The scale of the photo's own pixels (a small photo fits larger than 100 %); data-zoom: times the fit.
  zoomLabel.textContent = `${Math.round((100 * t.z * viewport().vw) / (view.w || 1))}%`;
  if (!moved) return;
  draw();
  zoomChanged();
}

function zoomAt(factor, px, py) {
  const {vw, vh} = viewport();
  setTransform(SdView.zoomAbout(t, factor, px ?? vw / 2, py ?? vh / 2, vw, vh, zMax()));
}

// Show the image as large as the column and the window's height below the stage's top allow (at
// least half the window), small images upscaled; a zoomed view keeps its place.
function fit() {
  const before = viewport();
  if (props.image_url) {
    const w = view.w || 1, h = view.h || 1;
    const top = stage.getBoundingClientRect().top + window.scrollY;
    const height = Math.max(200, window.innerHeight * 0.5, window.innerHeight - top - 64);
    const scale = Math.min(Math.max(100, root.clientWidth) / w, height / h);
    base.style.width = Math.floor(w * scale) + 'px';
  } else {
    base.style.width = '';
  }
  const after = viewport();
  const resized = after.vw !== before.vw || after.vh !== before.vh;
  if (resized) t = {z: t.z, tx: (t.tx * after.vw) / before.vw, ty: (t.ty * after.vh) / before.vh};
  setTransform(t);
  draw();
  if (resized) zoomChanged();
}

zoomLabel.addEventListener('click', () => setTransform(SdView.FIT));
root.querySelector('#zoom-in').addEventListener('click', () => zoomAt(1.5));
root.querySelector('#zoom-out').addEventListener('click', () => zoomAt(1 / 1.5));
const pressButton = (id) => document.getElementById(id)?.click();
root.querySelector('.sd-bar').addEventListener('click', (ev) => {
  const button = ev.target.closest('[data-press]');
  if (button) pressButton(button.dataset.press);
});
