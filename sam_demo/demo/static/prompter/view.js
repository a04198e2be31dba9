// The prompter's view transform: pure functions of numbers (no DOM), unit-tested with node's test
// runner (tests/demo/js/). The stage is a viewport of vw x vh CSS pixels that shows the whole
// image when unzoomed; its content (the photo, the layers, the markers) is drawn vw x vh large and
// moved by t = {z, tx, ty}: a content point c is at screen point c * z + (tx, ty) in the viewport.
// Zoom z runs from 1 (the image fits) to maxZoom; the content always covers the viewport.
// Image points are in original pixels, with pixel edges at whole numbers.
const SdView = (() => {
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const FIT = Object.freeze({z: 1, tx: 0, ty: 0});

  // The most zoom: one original pixel drawn `native` CSS pixels wide, and never under 4x.
  function maxZoom(imageW, vw, native = 8) {
    return Math.max(4, (native * imageW) / Math.max(1, vw));
  }

  // t brought within bounds: zoom within [1, zMax], panned so that the content covers the viewport.
  function clampView(t, vw, vh, zMax) {
    const z = clamp(t.z, 1, zMax);
    return {z, tx: clamp(t.tx, vw - vw * z, 0), ty: clamp(t.ty, vh - vh * z, 0)};
  }

  // Zoom by `factor` about the viewport point (px, py): the content under it stays under it.
  function zoomAbout(t, factor, px, py, vw, vh, zMax) {
    const z = clamp(t.z * factor, 1, zMax);
    const cx = (px - t.tx) / t.z, cy = (py - t.ty) / t.z;
    return clampView({z, tx: px - cx * z, ty: py - cy * z}, vw, vh, zMax);
  }

  function panBy(t, dx, dy, vw, vh, zMax) {
    return clampView({z: t.z, tx: t.tx + dx, ty: t.ty + dy}, vw, vh, zMax);
  }

  // A two-finger gesture: from `start` (the view and the two points when it began) to the two
  // points now. Zooms by the change of their distance and pans with their midpoint.
  function pinch(start, p1, p2, vw, vh, zMax) {
    const d0 = Math.hypot(start.p2.x - start.p1.x, start.p2.y - start.p1.y);
    const d1 = Math.hypot(p2.x - p1.x, p2.y - p1.y);
    const z = clamp(start.t.z * (d0 > 0 ? d1 / d0 : 1), 1, zMax);
    const m0 = {x: (start.p1.x + start.p2.x) / 2, y: (start.p1.y + start.p2.y) / 2};
    const m1 = {x: (p1.x + p2.x) / 2, y: (p1.y + p2.y) / 2};
    const cx = (m0.x - start.t.tx) / start.t.z, cy = (m0.y - start.t.ty) / start.t.z;
    return clampView({z, tx: m1.x - cx * z, ty: m1.y - cy * z}, vw, vh, zMax);
  }

  // The image point under the viewport point (px, py); `inside` says whether it is on the image.
  function toImage(t, px, py, vw, vh, imageW, imageH) {
    const x = (((px - t.tx) / t.z) * imageW) / vw, y = (((py - t.ty) / t.z) * imageH) / vh;
    return {x, y, inside: x >= 0 && y >= 0 && x <= imageW && y <= imageH};
  }

  // The viewport point over the image point (x, y).
  function toScreen(t, x, y, vw, vh, imageW, imageH) {
    return {x: ((x * vw) / imageW) * t.z + t.tx, y: ((y * vh) / imageH) * t.z + t.ty};
  }

  // The part of the image the viewport shows: [x0, y0, x1, y1] in original pixels.
  function visibleRegion(t, vw, vh, imageW, imageH) {
    const a = toImage(t, 0, 0, vw, vh, imageW, imageH), b = toImage(t, vw, vh, vw, vh, imageW, imageH);
    return [clamp(a.x, 0, imageW), clamp(a.y, 0, imageH), clamp(b.x, 0, imageW), clamp(b.y, 0, imageH)];
  }

  // Screen pixels (of the device) per pixel of a layer `layerW` pixels wide, at zoom z.
  function magnification(vw, z, dpr, layerW) {
    return (vw * z * dpr) / Math.max(1, layerW);
  }

  // The size [w, h] in device pixels at which to ask for the viewport's layers, at most maxPixels
  // (scaled down evenly past it).
  function detailSize(vw, vh, dpr, maxPixels) {
    let w = Math.max(1, Math.round(vw * dpr)), h = Math.max(1, Math.round(vh * dpr));
    if (w * h > maxPixels) {
      const s = Math.sqrt(maxPixels / (w * h));
      w = Math.max(1, Math.floor(w * s));
      h = Math.max(1, Math.floor(h * s));
    }
    return [w, h];
  }

  // A wheel event's zoom factor: up zooms in, by the same amount per pixel on any device.
  function wheelFactor(deltaY, deltaMode) {
    const pixels = deltaY * (deltaMode === 1 ? 16 : deltaMode === 2 ? 400 : 1);
    return clamp(Math.exp(-pixels * 0.002), 0.5, 2);
  }

  return {FIT, clampView, detailSize, magnification, maxZoom, panBy, pinch, toImage, toScreen, visibleRegion,
          wheelFactor, zoomAbout};
})();
if (typeof module !== 'undefined') module.exports = SdView;
