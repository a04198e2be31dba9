// input.js: what the user does. Left click or tap: positive point; right click, shift+click or the
// toggle: negative point; left drag: box. Wheel, pinch, + and − zoom about the pointer; space+drag,
// middle-drag, two-finger drag and the arrow keys pan; 0 fits. Points and boxes are sent in
// original pixels, mapped through the view transform (view.js), so they land on the image pixel
// under the pointer at any zoom.
// A click (or a candidate chosen in the candidates panel, or an object list action): POST
// sam-demo/edit {token, events}, the fast path: the server applies and decodes the new events and
// answers with the view. Only if that fails, props.value = the same JSON fires Gradio's .change,
// which does the edit itself and reports what was wrong. Events only grow until the image changes,
// so no click is lost: Python applies the events it has not seen.
// Keys (never while a text field has focus; `?` lists them): N new object, D / A next / previous
// image of a set, Ctrl/Cmd+Z undo,
// Ctrl/Cmd+Shift+Z or Ctrl+Y redo, Esc cancels the box being drawn (else closes the key list, else
// deselects: the next click starts a new object), C cycles the candidates, H toggles the hover
// preview, S segments everything, Delete/Backspace deletes the edited object, + − 0 and arrows zoom and
// pan, 1-9 give the edited object the category of that number in the list.

function toImage(ev) {
  const {left, top, vw, vh} = viewport();
  const p = SdView.toImage(t, ev.clientX - left, ev.clientY - top, vw, vh, view.w || 1, view.h || 1);
  return {...p, sx: ev.clientX, sy: ev.clientY};
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

// ---- new images go through the upload component (#image-input, hidden by the page's CSS): the
// empty stage and "Change image" open its file picker; a file dropped on the stage or pasted on
// the page, or an example picked in the empty stage, is handed to it. Several files, or a zip,
// dropped at once go to "Add images" (#add-images): a set of images.
const uploadInput = () => document.querySelector('#image-input input[type=file]');
const addImagesInput = () => {  // Gradio puts the upload button's file input just before it
  const input = document.getElementById('add-images')?.previousElementSibling;
  return input && input.matches('input[type=file]') ? input : null;
};
root.querySelector('.sd-upload').addEventListener('click', () => uploadInput()?.click());
root.querySelector('.sd-change').addEventListener('click', () => uploadInput()?.click());
function upload(files) {
  const all = [...(files || [])];
  const images = all.filter((f) => f.type.startsWith('image/') || /\.zip$/i.test(f.name));
  // Several images, or a zip: they go to "Add images" (#add-images), which makes a set of them.
  const many = images.length > 1 || images.some((f) => /\.zip$/i.test(f.name));
  const input = many ? addImagesInput() : uploadInput();
  const chosen = many ? images : [images[0] || all[0]].filter(Boolean);
  if (!input || !chosen.length) return false;
  const transfer = new DataTransfer();
  chosen.forEach((f) => transfer.items.add(f));
  input.files = transfer.files;
  input.dispatchEvent(new Event('change', {bubbles: true}));
  return true;
}
const examplesBox = root.querySelector('.sd-examples');
function showExamples() {
  let list = [];
  try { list = JSON.parse(props.examples || '[]'); } catch (e) { list = []; }
  examplesBox.innerHTML = list.length
    ? '<p>or try an example:</p>' + list.map((x) =>
      `<button type="button" class="sd-example" data-example="${esc(x.name)}"><img src="${esc(x.thumb)}" alt="">` +
      `<span>${esc(x.caption)}</span></button>`).join('')
    : '';
}
examplesBox.addEventListener('click', (ev) => {
  const button = ev.target.closest('[data-example]');
  if (!button || button.getAttribute('aria-busy') === 'true') return;
  button.setAttribute('aria-busy', 'true');
  const name = button.dataset.example;
  fetch(`sam-demo/example/${encodeURIComponent(name)}`)
    .then((response) => (response.ok ? response.blob() : Promise.reject()))
    .then((blob) => upload([new File([blob], name, {type: blob.type})]))
    .catch(() => {})
    .finally(() => button.removeAttribute('aria-busy'));
});
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

// ---- pointer: a press is a point or a box, or a pan (middle button, or with space held); two
// touches are a pinch, which cancels the press the first one began.
const touches = new Map();  // pointerId -> {x, y} (viewport pixels) of the touches down now
let pan = null, gesture = null, spaceHeld = false, pointerAt = null;
const ready = () => !!(props.image_url && token);
const local = (ev) => { const {left, top} = viewport(); return {x: ev.clientX - left, y: ev.clientY - top}; };

stage.addEventListener('contextmenu', (ev) => ev.preventDefault());
stage.addEventListener('mousedown', (ev) => { if (ev.button === 1) ev.preventDefault(); });  // no autoscroll: it pans
stage.addEventListener('pointerdown', (ev) => {
  if (!ready()) return;
  ev.preventDefault();
  cancelPreview();
  stage.setPointerCapture(ev.pointerId);
  if (ev.pointerType === 'touch') {
    touches.set(ev.pointerId, local(ev));
    if (touches.size === 2) {
      drag = null;  // the first finger's tap or box is not made
      const [p1, p2] = touches.values();
      gesture = {t, p1, p2};
      draw();
      return;
    }
    if (touches.size > 2 || gesture) return;
  }
  if (ev.button === 1 || spaceHeld) {
    pan = {from: local(ev), t};
    stage.classList.add('panning');
    return;
  }
  const p = toImage(ev);
  drag = {start: p, end: p, button: ev.button, negative: ev.button === 2 || ev.shiftKey || negativeMode, moved: false};
});
stage.addEventListener('pointermove', (ev) => {
  pointerAt = local(ev);
  if (ev.pointerType === 'touch' && touches.has(ev.pointerId)) touches.set(ev.pointerId, pointerAt);
  const {vw, vh} = viewport();
  if (gesture) {
    const [p1, p2] = touches.values();
    if (p2) setTransform(SdView.pinch(gesture, p1, p2, vw, vh, zMax()));
    return;
  }
  if (pan) {
    setTransform(SdView.panBy(pan.t, pointerAt.x - pan.from.x, pointerAt.y - pan.from.y, vw, vh, zMax()));
    return;
  }
  if (!drag) {
    if (hoverOn && ev.pointerType === 'mouse' && !ev.shiftKey && !spaceHeld && ready()) wantPreview(toImage(ev));
    return;
  }
  drag.end = toImage(ev);
  if (drag.button === 0 && Math.hypot(drag.end.sx - drag.start.sx, drag.end.sy - drag.start.sy) > 5) drag.moved = true;
  if (drag.moved) draw();
});
function release(ev) {
  touches.delete(ev.pointerId);
  if (gesture) { if (touches.size === 0) gesture = null; return; }
  if (pan) { pan = null; stage.classList.remove('panning'); return; }
}
stage.addEventListener('pointerup', (ev) => {
  const wasGesture = !!gesture || !!pan;
  release(ev);
  if (wasGesture || !drag) return;  // also after Esc cancelled the box being drawn
  const d = drag;
  drag = null;
  const p = toImage(ev);
  const {w, h} = {w: view.w || 1, h: view.h || 1};
  if (d.moved) send({type: 'box', x0: clamp(d.start.x, 0, w), y0: clamp(d.start.y, 0, h), x1: clamp(p.x, 0, w), y1: clamp(p.y, 0, h)});
  else send({type: 'point', x: d.start.x, y: d.start.y, label: d.negative ? 0 : 1});  // off the image: the server says so
});
stage.addEventListener('pointercancel', (ev) => { release(ev); drag = null; draw(); });
stage.addEventListener('pointerleave', () => { pointerAt = null; if (!drag) cancelPreview(); });
stage.addEventListener('wheel', (ev) => {
  if (!ready()) return;
  ev.preventDefault();
  cancelPreview();
  const p = local(ev);
  zoomAt(SdView.wheelFactor(ev.deltaY, ev.deltaMode), p.x, p.y);
}, {passive: false});

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
function showMode() {
  const verb = canHover ? 'Clicks add' : 'Taps add';
  mode.setAttribute('aria-pressed', String(negativeMode));
  mode.classList.toggle('negative', negativeMode);
  mode.innerHTML = negativeMode ? `${verb} <b>− negative</b> points` : `${verb} <b>+ positive</b> points`;
  mode.title = canHover ? 'Make clicks subtract (or right-click / Shift+click)' : 'Make taps subtract';
}
mode.addEventListener('click', () => { negativeMode = !negativeMode; showMode(); });
// Mask opacity (0-100 % of the layers' own), kept for the next visit.
const opacity = root.querySelector('.sd-opacity input');
function setOpacity(percent) {
  opacity.value = String(percent);
  masksBox.style.opacity = String(percent / 100);
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
function nextCandidate() {
  const buttons = [...document.querySelectorAll('#candidates [data-candidate]')];
  if (!buttons.length || !token) return;
  const current = buttons.findIndex((b) => b.getAttribute('aria-pressed') === 'true');
  send({type: 'candidate', index: Number(buttons[(current + 1) % buttons.length].dataset.candidate)});
}
// Esc: cancel the box being drawn, else close the key list, else deselect: the edited object is
// left as it is and the next click starts a new one (nothing to do if the edited object is new).
function escape() {
  if (drag) { drag = null; draw(); return; }
  if (!keysBox.hidden) { showKeys(false); return; }
  if (token && (view.controls || {})['new-object'] === '') send({type: 'new'});
}
// Keys 1-9: the edited object gets the list's category of that number; a key past the list changes
// nothing and says why on the status line (as the server's own problems are told).
function setCategory(k) {
  const names = view.categories || [];
  if (k < names.length) { send({type: 'category', object: view.active_object ?? 0, category: names[k]}); return; }
  const why = names.length
    ? `Key ${k + 1} sets category ${k + 1}, and the list has ${names.length}: add more in the Categories box.`
    : `Key ${k + 1} sets a category, and the list is empty: type the categories, one per line, in the Categories box.`;
  const status = `<div class="sd-status sd-problem" role="alert" title="${esc(why)}">⚠ ${esc(why)}</div>`;
  document.dispatchEvent(new CustomEvent('sam-demo:view', {detail: {status}}));
}
const PAN_KEYS = {arrowleft: [1, 0], arrowright: [-1, 0], arrowup: [0, 1], arrowdown: [0, -1]};
function panStep(dx, dy) {
  const {vw, vh} = viewport();
  setTransform(SdView.panBy(t, dx * vw * 0.15, dy * vh * 0.15, vw, vh, zMax()));
}
const inTextField = (target) => target.closest && target.closest('input, textarea, select, [contenteditable]');
document.addEventListener('keydown', (ev) => {
  if (ev.isComposing || inTextField(ev.target)) return;
  const key = ev.key.toLowerCase(), mod = ev.ctrlKey || ev.metaKey;
  let act = null;
  if (mod && !ev.altKey && key === 'z') act = () => pressButton(ev.shiftKey ? 'redo' : 'undo');
  else if (mod && !ev.altKey && key === 'y') act = () => pressButton('redo');
  else if (key === 'escape') act = escape;
  else if (mod || ev.altKey) return;
  else if (ev.key === '?') act = () => showKeys(keysBox.hidden);
  else if (key === 'n') act = () => pressButton('new-object');
  else if (key === 'd') act = () => pressButton('next-image');
  else if (key === 'a') act = () => pressButton('prev-image');
  else if (/^[1-9]$/.test(ev.key) && token) act = () => setCategory(Number(ev.key) - 1);
  else if (key === 'c') act = nextCandidate;
  else if (key === 'h' && canHover) act = () => hoverButton.click();
  else if (key === 's') act = () => pressButton('segment-everything');
  else if ((key === 'delete' || key === 'backspace') && token) act = () => send({type: 'delete', object: view.active_object ?? 0});
  else if (!ready()) return;
  else if (key === '+' || key === '=') act = () => zoomAt(1.5, pointerAt?.x, pointerAt?.y);
  else if (key === '-' || key === '_') act = () => zoomAt(1 / 1.5, pointerAt?.x, pointerAt?.y);
  else if (key === '0') act = () => setTransform(SdView.FIT);
  else if (PAN_KEYS[key] && t.z > 1) act = () => panStep(...PAN_KEYS[key]);
  else if (key === ' ' && pointerAt) act = () => { spaceHeld = true; stage.classList.add('grab'); };
  if (!act) return;
  ev.preventDefault();
  act();
});
// A set of images lives in this tab: leaving or reloading the page asks first.
window.addEventListener('beforeunload', (ev) => {
  const set = document.getElementById('workspace');
  if (set && set.offsetParent !== null) ev.preventDefault();
});
// The set's strip buttons are an arrow each and a ×: hovering or focusing one says what it does
// (a tooltip, and its name for screen readers).
const STRIP_TITLES = {'prev-image': 'Previous image (A)', 'next-image': 'Next image (D)', 'remove-image': 'Remove this image from the set'};
const nameStripButton = (ev) => {
  const button = ev.target.closest && ev.target.closest('#prev-image, #next-image, #remove-image');
  if (button && !button.title) {
    button.title = STRIP_TITLES[button.id];
    button.setAttribute('aria-label', STRIP_TITLES[button.id]);
  }
};
document.addEventListener('pointerover', nameStripButton);
document.addEventListener('focusin', nameStripButton);
document.addEventListener('keyup', (ev) => {
  if (ev.key === ' ') { spaceHeld = false; stage.classList.remove('grab'); }
});
window.addEventListener('blur', () => { spaceHeld = false; stage.classList.remove('grab'); });

setHover(hoverOn);
showMode();
new ResizeObserver(fit).observe(root);
window.addEventListener('resize', fit);
watch(['image_url', 'view'], sync);
watch(['examples'], showExamples);
showExamples();
sync();
