// Distributions: a histogram per score column (all samples in grey, the selection in colour),
// with range brushing: drag across a histogram to keep the samples whose value lies in the range.
import { binning, el, fmt, hasValues, svg } from './util.js';

const W = 210;
const H = 70;
const BINS = 30;
const PAD = 4;

export class HistogramView {
  constructor(container, app) {
    this.app = app;
    this.root = el('div', { class: 'view-body histograms' });
    container.append(this.root);
  }

  setData(data, meta) {
    this.root.replaceChildren();
    this.data = data;
    this.charts = [];
    const names = (meta.score_columns || []).filter((c) => data.columns.has(c) && data.columns.get(c).kind !== 'category' && hasValues(data.columns.get(c)));
    if (!names.length) this.root.append(el('p', { class: 'empty', text: 'No score columns.' }));
    for (const name of names) this.charts.push(this.chart(name, data.columns.get(name), meta.columns?.[name]));
  }

  chart(name, column, info) {
    const bin = binning(column, BINS);
    const box = el('figure', { class: 'hist', 'data-column': name });
    const caption = el('figcaption', { title: info?.description || name }, el('b', { text: name }));
    const range = el('span', { class: 'range' });
    caption.append(range);
    const root = svg('svg', { width: W, height: H + 14 });
    const bw = (W - 2 * PAD) / bin.bins;
    const bars = [];
    for (let b = 0; b < bin.bins; b++) {
      const total = svg('rect', { x: PAD + b * bw, width: Math.max(1, bw - 1), fill: '#ddd' });
      const sel = svg('rect', { x: PAD + b * bw, width: Math.max(1, bw - 1), fill: '#4e79a7' });
      const tip = svg('title');
      sel.append(tip);
      root.append(total, sel);
      bars.push({ total, sel, tip });
    }
    root.append(svg('text', { x: PAD, y: H + 12, class: 'tick', text: fmt(bin.integral ? bin.lo : bin.edges[0], 3) }));
    root.append(svg('text', { x: W - PAD, y: H + 12, class: 'tick', 'text-anchor': 'end', text: fmt(bin.integral ? bin.hi : bin.edges[bin.bins], 3) }));
    const brush = svg('rect', { class: 'hbrush', y: 0, height: H, width: 0, x: 0 });
    root.append(brush);
    box.append(caption, root);
    this.root.append(box);
    const chart = { name, column, bin, bars, brush, box, range, bw, root };
    chart.totals = this.count(chart, null);
    this.bindBrush(chart);
    return chart;
  }

  valueAt(chart, px) {
    const { edges, bins } = chart.bin;
    const t = (px - PAD) / (W - 2 * PAD);
    return edges[0] + Math.max(0, Math.min(1, t)) * (edges[bins] - edges[0]);
  }

  bindBrush(chart) {
    let start = null;
    const local = (event) => event.clientX - chart.root.getBoundingClientRect().left;
    chart.root.addEventListener('pointerdown', (event) => {
      start = local(event);
      chart.root.setPointerCapture(event.pointerId);
    });
    chart.root.addEventListener('pointermove', (event) => {
      if (start === null) return;
      const x = local(event);
      chart.brush.setAttribute('x', Math.min(start, x));
      chart.brush.setAttribute('width', Math.abs(x - start));
    });
    chart.root.addEventListener('pointerup', (event) => {
      if (start === null) return;
      const x = local(event);
      const [a, b] = [Math.min(start, x), Math.max(start, x)];
      start = null;
      if (b - a < 3) {
        this.setRange(chart, null);
        return;
      }
      this.setRange(chart, [this.valueAt(chart, a), this.valueAt(chart, b)]);
    });
  }

  // Keep the samples with lo <= value <= hi (null clears this column's filter).
  setRange(chart, range) {
    const key = `dist:${chart.name}`;
    chart.active = range;
    if (!range) {
      chart.brush.setAttribute('width', 0);
      chart.range.textContent = '';
      this.app.setFilter(key, null);
      return;
    }
    const [lo, hi] = range;
    const px = (v) => PAD + ((v - chart.bin.edges[0]) / (chart.bin.edges[chart.bin.bins] - chart.bin.edges[0] || 1)) * (W - 2 * PAD);
    chart.brush.setAttribute('x', px(lo));
    chart.brush.setAttribute('width', Math.max(1, px(hi) - px(lo)));
    chart.range.textContent = ` [${fmt(lo, 3)}, ${fmt(hi, 3)}]`;
    const values = chart.column.values;
    const n = this.data.n;
    const mask = new Uint8Array(n);
    for (let i = 0; i < n; i++) mask[i] = values[i] >= lo && values[i] <= hi ? 1 : 0;
    this.app.setFilter(key, mask, `${chart.name} in [${fmt(lo, 3)}, ${fmt(hi, 3)}]`);
  }

  brushRange(name, lo, hi) {
    const chart = this.charts.find((c) => c.name === name);
    if (chart) this.setRange(chart, [lo, hi]);
  }

  count(chart, mask) {
    const counts = new Int32Array(chart.bin.bins);
    const codes = chart.bin.codes;
    const n = this.data.n;
    for (let i = 0; i < n; i++) {
      if (mask && !mask[i]) continue;
      const c = codes[i];
      if (c >= 0) counts[c]++;
    }
    return counts;
  }

  clearActive() {
    for (const chart of this.charts || []) {
      chart.active = null;
      chart.brush.setAttribute('width', 0);
      chart.range.textContent = '';
    }
  }

  update(mask) {
    for (const chart of this.charts) {
      const counts = this.count(chart, mask);
      let max = 1;
      for (const t of chart.totals) if (t > max) max = t;
      let smax = 1;  // the selection gets its own scale, so a small one still shows its shape
      for (const c of counts) if (c > smax) smax = c;
      let selected = 0;
      chart.bars.forEach((bar, b) => {
        const th = (chart.totals[b] / max) * H;
        const sh = (counts[b] / smax) * H * 0.95;
        selected += counts[b];
        bar.total.setAttribute('y', H - th);
        bar.total.setAttribute('height', th);
        bar.sel.setAttribute('y', H - sh);
        bar.sel.setAttribute('height', sh);
        bar.tip.textContent = `[${fmt(chart.bin.edges[b], 3)}, ${fmt(chart.bin.edges[b + 1], 3)}): ${counts[b]} of ${chart.totals[b]}`;
      });
      chart.box.setAttribute('data-selected', selected);
    }
  }
}
