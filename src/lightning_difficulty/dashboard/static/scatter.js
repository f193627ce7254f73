// Projection: a canvas scatter of the 2-D embedding, coloured by any column, with box selection.
import { categorical, el, finiteRange, gradientCss, hexToRgb, viridis } from './util.js';

const W = 420;
const H = 340;
const M = 8;

export class ScatterView {
  constructor(container, app) {
    this.app = app;
    this.root = el('div', { class: 'view-body scatter' });
    container.append(this.root);
  }

  setData(data) {
    this.root.replaceChildren();
    this.data = data;
    const x = data.columns.get('projection:x');
    const y = data.columns.get('projection:y');
    if (!x || !y) {
      this.canvas = null;
      this.root.append(el('p', { class: 'empty', text: 'No embedding projection for this split.' }));
      return;
    }
    const [x0, x1] = finiteRange(x.values);
    const [y0, y1] = finiteRange(y.values);
    this.px = new Float32Array(data.n);
    this.py = new Float32Array(data.n);
    for (let i = 0; i < data.n; i++) {
      this.px[i] = M + ((x.values[i] - x0) / (x1 - x0 || 1)) * (W - 2 * M);
      this.py[i] = H - M - ((y.values[i] - y0) / (y1 - y0 || 1)) * (H - 2 * M);
    }
    this.canvas = el('canvas', { width: W, height: H, class: 'scatter-canvas' });
    this.brush = el('div', { class: 'brush', hidden: true });
    this.legend = el('div', { class: 'legend' });
    const wrap = el('div', { class: 'scatter-wrap' }, this.canvas, this.brush);
    this.root.append(wrap, this.legend);
    this.ctx = this.canvas.getContext('2d');
    this.image = this.ctx.createImageData(W, H);
    this.bindBrush();
    this.colourBy(this.app.colorBy);
  }

  colourBy(name) {
    if (!this.canvas) return;
    const column = this.data.columns.get(name);
    this.colors = new Uint32Array(this.data.n);
    const pack = ([r, g, b]) => (255 << 24) | (b << 16) | (g << 8) | r;  // little-endian RGBA
    this.legend.replaceChildren();
    if (!column) {
      this.colors.fill(pack([78, 121, 167]));
    } else if (column.kind === 'category' || column.kind === 'bool' || name === 'label' || name === 'prediction') {
      const cats = column.kind === 'category' ? column.categories : null;
      const palette = CATEGORY_CACHE;
      for (let i = 0; i < this.data.n; i++) {
        const v = column.values[i];
        this.colors[i] = v < 0 ? pack([160, 160, 160]) : pack(palette(v));
      }
      const count = cats ? cats.length : name === 'label' || name === 'prediction' ? this.app.meta.class_names.length : 2;
      for (let c = 0; c < Math.min(count, 20); c++) {
        const text = cats ? cats[c] : column.kind === 'bool' ? String(Boolean(c)) : this.app.meta.class_names[c];
        this.legend.append(el('span', { class: 'key' }, el('i', { style: `background:rgb(${palette(c)})` }), text));
      }
    } else {
      const [lo, hi] = finiteRange(column.values);
      for (let i = 0; i < this.data.n; i++) {
        const v = column.values[i];
        this.colors[i] = v === v ? pack(viridis((v - lo) / (hi - lo || 1))) : pack([200, 200, 200]);
      }
      this.legend.append(el('span', { class: 'key', text: `${name}: ${lo.toPrecision(3)}` }),
        el('span', { class: 'ramp', style: `background: ${gradientCss(viridis)}` }), el('span', { class: 'key', text: hi.toPrecision(3) }));
    }
    if (this.mask) this.update(this.mask, this.count);
  }

  bindBrush() {
    let start = null;
    let pending = null;
    const pos = (event) => {
      const r = this.canvas.getBoundingClientRect();
      return [Math.max(0, Math.min(W, event.clientX - r.left)), Math.max(0, Math.min(H, event.clientY - r.top))];
    };
    const apply = (a, b) => {
      const [xa, xb] = [Math.min(a[0], b[0]), Math.max(a[0], b[0])];
      const [ya, yb] = [Math.min(a[1], b[1]), Math.max(a[1], b[1])];
      Object.assign(this.brush.style, { left: `${xa}px`, top: `${ya}px`, width: `${xb - xa}px`, height: `${yb - ya}px` });
      this.brush.hidden = false;
      this.selectBox(xa, ya, xb, yb);
    };
    this.canvas.addEventListener('pointerdown', (event) => {
      start = pos(event);
      this.canvas.setPointerCapture(event.pointerId);
    });
    this.canvas.addEventListener('pointermove', (event) => {
      if (!start) return;
      const end = pos(event);
      if (Math.abs(end[0] - start[0]) + Math.abs(end[1] - start[1]) < 4) return;
      if (pending) { pending = [start, end]; return; }
      pending = [start, end];
      requestAnimationFrame(() => { if (pending) apply(...pending); pending = null; });
    });
    this.canvas.addEventListener('pointerup', (event) => {
      if (!start) return;
      const end = pos(event);
      if (Math.abs(end[0] - start[0]) + Math.abs(end[1] - start[1]) < 4) {
        const nearest = this.nearest(end[0], end[1]);
        if (nearest >= 0) this.app.openInstance(this.app.split, this.app.indexOf(nearest));
      } else {
        pending = null;
        apply(start, end);
      }
      start = null;
    });
  }

  selectBox(xa, ya, xb, yb) {
    const n = this.data.n;
    const mask = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const x = this.px[i];
      const y = this.py[i];
      mask[i] = x >= xa && x <= xb && y >= ya && y <= yb ? 1 : 0;
    }
    this.app.setFilter('projection', mask, 'projection box');
  }

  nearest(x, y) {
    let best = -1;
    let bestD = 36;
    for (let i = 0; i < this.data.n; i++) {
      const d = (this.px[i] - x) ** 2 + (this.py[i] - y) ** 2;
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }

  clearActive() {
    if (this.brush) this.brush.hidden = true;
  }

  update(mask, count) {
    this.mask = mask;
    this.count = count;
    if (!this.canvas) return;
    const pixels = new Uint32Array(this.image.data.buffer);
    pixels.fill(0xffffffff);
    const grey = (255 << 24) | (218 << 16) | (218 << 8) | 218;
    const n = this.data.n;
    const all = count === n;
    const dot = (i, colour) => {
      const x = this.px[i] | 0;
      const y = this.py[i] | 0;
      const o = y * W + x;
      pixels[o] = colour;
      if (x + 1 < W) pixels[o + 1] = colour;
      if (y + 1 < H) { pixels[o + W] = colour; if (x + 1 < W) pixels[o + W + 1] = colour; }
    };
    if (!all) for (let i = 0; i < n; i++) if (!mask[i]) dot(i, grey);
    const big = !all && count < 2000;  // a small selection is drawn larger so it stands out
    for (let i = 0; i < n; i++) {
      if (!mask[i]) continue;
      dot(i, this.colors[i]);
      if (big) { const x = this.px[i]; const y = this.py[i]; this.px[i] -= 1; this.py[i] -= 1; dot(i, this.colors[i]); this.px[i] = x; this.py[i] = y; }
    }
    this.ctx.putImageData(this.image, 0, 0);
    this.root.setAttribute('data-selected', count);
  }
}

const CATEGORY_CACHE = (i) => hexToRgb(categorical(i));
