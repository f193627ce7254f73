// Difficulty summary: a 2-D histogram for each pair of perspectives, for correct and wrong samples.
import { binning, el, fmt, hasValues, ramp, svg } from './util.js';
import { maskWhere } from './selection.js';

const BINS = 10;
const CELL = 13;

export class SummaryView {
  constructor(container, app) {
    this.app = app;
    this.root = el('div', { class: 'view-body summary' });
    container.append(this.root);
  }

  setData(data, meta) {
    this.root.replaceChildren();
    this.data = data;
    this.maps = [];
    const names = (meta.perspectives || []).filter((c) => data.columns.has(c) && hasValues(data.columns.get(c)));  // all-NaN in this split: left out
    const correct = data.columns.get('correct');
    if (names.length < 2) {
      this.root.append(el('p', { class: 'empty', text: 'Fewer than two perspective columns in this run.' }));
      return;
    }
    this.correct = correct ? correct.values : null;
    this.bins = new Map(names.map((c) => [c, binning(data.columns.get(c), BINS)]));
    for (let a = 0; a < names.length; a++) {
      for (let b = a + 1; b < names.length; b++) {
        for (const outcome of this.correct ? [1, 0] : [null]) this.maps.push(this.heatmap(names[a], names[b], outcome));
      }
    }
  }

  heatmap(xName, yName, outcome) {
    const bx = this.bins.get(xName);
    const by = this.bins.get(yName);
    const pad = 34;
    const w = pad + bx.bins * CELL + 6;
    const h = by.bins * CELL + pad;
    const title = outcome === null ? '' : outcome ? 'correct' : 'wrong';
    const box = el('figure', { class: 'heatmap', 'data-pair': `${xName}|${yName}`, 'data-outcome': title });
    box.append(el('figcaption', { text: `${yName} × ${xName}${title ? ` (${title})` : ''}` }));
    const root = svg('svg', { width: w, height: h });
    root.append(svg('text', { x: pad, y: h - 4, class: 'tick', text: fmt(bx.edges[0], 2) }));
    root.append(svg('text', { x: w - 4, y: h - 4, class: 'tick', 'text-anchor': 'end', text: fmt(bx.edges[bx.bins], 2) }));
    root.append(svg('text', { x: pad - 3, y: by.bins * CELL, class: 'tick', 'text-anchor': 'end', text: fmt(by.edges[0], 2) }));
    root.append(svg('text', { x: pad - 3, y: 9, class: 'tick', 'text-anchor': 'end', text: fmt(by.edges[by.bins], 2) }));
    const cells = [];
    for (let j = 0; j < by.bins; j++) {
      for (let i = 0; i < bx.bins; i++) {
        const rect = svg('rect', {
          x: pad + i * CELL, y: (by.bins - 1 - j) * CELL, width: CELL - 1, height: CELL - 1, 'data-cell': `${i},${j}`,
        });
        const tip = svg('title');
        rect.append(tip);
        rect.addEventListener('click', () => this.pick(map, i, j));
        root.append(rect);
        cells.push({ rect, tip, i, j });
      }
    }
    box.append(root);
    this.root.append(box);
    const map = { xName, yName, outcome, bx, by, cells, box, key: `summary` };
    return map;
  }

  inCell(map, i, j) {
    const cx = map.bx.codes;
    const cy = map.by.codes;
    const correct = this.correct;
    return (r) => cx[r] === i && cy[r] === j && (map.outcome === null || correct[r] === map.outcome);
  }

  pick(map, i, j) {
    const id = `${map.xName}|${map.yName}|${map.outcome}|${i},${j}`;
    if (this.active === id) {
      this.active = null;
      this.app.setFilter('summary', null);
      return;
    }
    this.active = id;
    const label = `${map.xName} bin ${i}, ${map.yName} bin ${j}${map.outcome === null ? '' : map.outcome ? ', correct' : ', wrong'}`;
    this.app.setFilter('summary', maskWhere(this.data.n, this.inCell(map, i, j)), label);
  }

  clearActive() {
    this.active = null;
  }

  update(mask) {
    for (const map of this.maps) {
      const nx = map.bx.bins;
      const counts = new Int32Array(nx * map.by.bins);
      const totals = new Int32Array(nx * map.by.bins);
      const cx = map.bx.codes;
      const cy = map.by.codes;
      const n = this.data.n;
      for (let r = 0; r < n; r++) {
        if (map.outcome !== null && this.correct[r] !== map.outcome) continue;
        const x = cx[r];
        const y = cy[r];
        if (x < 0 || y < 0) continue;
        totals[y * nx + x]++;
        if (mask[r]) counts[y * nx + x]++;
      }
      let max = 1;
      for (const c of counts) if (c > max) max = c;
      let selected = 0;
      for (const cell of map.cells) {
        const c = counts[cell.j * nx + cell.i];
        const t = totals[cell.j * nx + cell.i];
        selected += c;
        const id = `${map.xName}|${map.yName}|${map.outcome}|${cell.i},${cell.j}`;
        const rgb = ramp(Math.log1p(c) / Math.log1p(max));
        cell.rect.setAttribute('fill', c ? `rgb(${rgb})` : t ? '#eee' : '#fafafa');
        cell.rect.setAttribute('class', this.active === id ? 'active' : '');
        cell.rect.setAttribute('data-selected', c);
        cell.tip.textContent = `${map.xName} [${fmt(map.bx.edges[cell.i], 2)}, ${fmt(map.bx.edges[cell.i + 1], 2)}), ${map.yName} [${fmt(map.by.edges[cell.j], 2)}, ${fmt(map.by.edges[cell.j + 1], 2)}): ${c} of ${t}`;
      }
      map.box.setAttribute('data-selected', selected);
    }
  }
}
