// The prompter's view transform (sam_demo/demo/static/prompter/view.js), with node's test runner:
//   node --test tests/demo/js/
const test = require('node:test');
const assert = require('node:assert/strict');
const V = require('../../../sam_demo/demo/static/prompter/view.js');

const near = (a, b, eps = 1e-9) => assert.ok(Math.abs(a - b) <= eps, `${a} is not ${b}`);
const VW = 800, VH = 600, IW = 4000, IH = 3000, ZMAX = V.maxZoom(IW, VW);

test('unzoomed, a viewport point maps to the image point in proportion, and back', () => {
  for (const [px, py, x, y] of [[0, 0, 0, 0], [800, 600, 4000, 3000], [200, 150, 1000, 750], [0.5, 0.5, 2.5, 2.5]]) {
    const p = V.toImage(V.FIT, px, py, VW, VH, IW, IH);
    near(p.x, x); near(p.y, y); assert.equal(p.inside, true);
    const s = V.toScreen(V.FIT, x, y, VW, VH, IW, IH);
    near(s.x, px); near(s.y, py);
  }
});

test('zooming about a point keeps the image point under it, at every zoom', () => {
  for (const [factor, px, py] of [[4, 123.4, 456.7], [2, 0, 0], [8, 800, 600], [1.5, 400, 300], [30, 17, 589]]) {
    const before = V.toImage(V.FIT, px, py, VW, VH, IW, IH);
    const t = V.zoomAbout(V.FIT, factor, px, py, VW, VH, ZMAX);
    near(t.z, Math.min(factor, ZMAX));
    const after = V.toImage(t, px, py, VW, VH, IW, IH);
    near(after.x, before.x, 1e-6); near(after.y, before.y, 1e-6);
  }
});

test('at 4x, one screen pixel is a quarter of the fitted image pixels, so the mapping is exact to a fraction of a pixel', () => {
  const t = V.zoomAbout(V.FIT, 4, 400, 300, VW, VH, ZMAX);
  const a = V.toImage(t, 400, 300, VW, VH, IW, IH), b = V.toImage(t, 401, 300, VW, VH, IW, IH);
  near(b.x - a.x, IW / VW / 4);
  const s = V.toScreen(t, a.x, a.y, VW, VH, IW, IH);
  near(s.x, 400); near(s.y, 300);
});

test('zoom stays within [1, maxZoom]; maxZoom shows an original pixel at least 8 CSS pixels wide', () => {
  assert.equal(V.zoomAbout(V.FIT, 0.2, 10, 10, VW, VH, ZMAX).z, 1);
  assert.equal(V.zoomAbout(V.FIT, 1e6, 10, 10, VW, VH, ZMAX).z, ZMAX);
  near(ZMAX * (VW / IW), 8);
  assert.equal(V.maxZoom(100, 800), 4);  // a small image can still be zoomed
});

test('panning and zooming past the edges clamp: the image always covers the viewport', () => {
  const t = V.zoomAbout(V.FIT, 4, 400, 300, VW, VH, ZMAX);
  for (const [dx, dy] of [[1e5, 0], [-1e5, 0], [0, 1e5], [0, -1e5], [1e5, -1e5]]) {
    const p = V.panBy(t, dx, dy, VW, VH, ZMAX);
    assert.ok(p.tx <= 0 && p.tx >= VW - VW * p.z && p.ty <= 0 && p.ty >= VH - VH * p.z);
    const [x0, y0, x1, y1] = V.visibleRegion(p, VW, VH, IW, IH);
    assert.ok(x0 >= 0 && y0 >= 0 && x1 <= IW && y1 <= IH);
    near(x1 - x0, IW / 4, 1e-6); near(y1 - y0, IH / 4, 1e-6);
  }
  const out = V.zoomAbout(t, 0.25, 0, 0, VW, VH, ZMAX);
  assert.deepEqual(out, {z: 1, tx: 0, ty: 0});
});

test('a pinch zooms by the change of finger distance and pans with their midpoint', () => {
  const start = {t: V.FIT, p1: {x: 300, y: 300}, p2: {x: 500, y: 300}};
  const under = V.toImage(V.FIT, 400, 300, VW, VH, IW, IH);
  const t = V.pinch(start, {x: 200, y: 300}, {x: 600, y: 300}, VW, VH, ZMAX);  // twice as far apart
  near(t.z, 2);
  const still = V.toImage(t, 400, 300, VW, VH, IW, IH);
  near(still.x, under.x); near(still.y, under.y);
  const moved = V.pinch({t, p1: {x: 200, y: 300}, p2: {x: 600, y: 300}}, {x: 150, y: 300}, {x: 550, y: 300}, VW, VH, ZMAX);
  near(moved.z, 2); near(moved.tx, t.tx - 50);  // same distance, midpoint 50 px left: a pan
});

test('a point off the image is not inside', () => {
  assert.equal(V.toImage(V.FIT, -1, 10, VW, VH, IW, IH).inside, false);
  assert.equal(V.toImage(V.FIT, 10, 601, VW, VH, IW, IH).inside, false);
});

test('the region is asked for at the screen resolution, scaled down evenly past the bound', () => {
  assert.deepEqual(V.detailSize(800, 600, 1, 4.2e6), [800, 600]);
  assert.deepEqual(V.detailSize(800, 600, 2, 4.2e6), [1600, 1200]);
  const [w, h] = V.detailSize(2000, 1500, 2, 4.2e6);
  assert.ok(w * h <= 4.2e6 && Math.abs(w / h - 4 / 3) < 0.01);
  near(V.magnification(800, 4, 1, 1280), 2.5);
});

test('the wheel zooms in when scrolled up, out when down, by the same amount per pixel, bounded per event', () => {
  assert.ok(V.wheelFactor(-100, 0) > 1 && V.wheelFactor(100, 0) < 1);
  near(V.wheelFactor(-100, 0) * V.wheelFactor(100, 0), 1);
  near(V.wheelFactor(3, 1), V.wheelFactor(48, 0));  // lines are 16 pixels
  assert.equal(V.wheelFactor(-1e6, 0), 2);
});
