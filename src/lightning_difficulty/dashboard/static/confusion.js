// Confusion matrix (true x predicted): a cell selects its samples; cells show selected / total counts.
import { colourLegend, el, label, svg } from './util.js';
import { maskWhere } from './selection.js';

export class ConfusionView {
  constructor(container, app) {
    this.app = app;
    this.root = el('div', { class: 'view-body' });
    container.append(this.root);
  }

  setData(data, meta) {
    this.root.replaceChildren();
    this.data = data;
    const truth = data.columns.get('label');
    const pred = data.columns.get('prediction');
    if (!truth || !pred || truth.kind === 'category' || pred.kind === 'category') {
      this.root.append(el('p', { class: 'empty', text: 'No label / prediction columns.' }));
      this.cells = null;
      return;
    }
    const k = Math.max(meta.class_names.length, 1);
    this.k = k;
    this.truth = truth.values;
    this.pred = pred.values;
    this.total = this.count(data.n, null);
    const size = Math.min(26, Math.floor(300 / k));
    const pad = 70;
    const width = pad + k * size + 4;
    const root = svg('svg', { width, height: pad + k * size + 4, class: 'confusion' });
    root.append(svg('text', { x: pad + (k * size) / 2, y: 10, 'text-anchor': 'middle', class: 'axis-title', text: 'predicted' }));
    root.append(svg('text', { x: 8, y: pad + (k * size) / 2, class: 'axis-title', transform: `rotate(-90 8 ${pad + (k * size) / 2})`, 'text-anchor': 'middle', text: 'true' }));
    this.cells = [];
    for (let c = 0; c < k; c++) {
      const name = label(meta, c);
      root.append(svg('text', { x: pad + c * size + size / 2, y: pad - 4, class: 'tick', transform: `rotate(-60 ${pad + c * size + size / 2} ${pad - 4})`, text: name.slice(0, 9) }));
      root.append(svg('text', { x: pad - 4, y: pad + c * size + size / 2 + 3, class: 'tick', 'text-anchor': 'end', text: name.slice(0, 9) }));
    }
    this.max = Math.max(1, ...this.total);
    for (let t = 0; t < k; t++) {
      for (let p = 0; p < k; p++) {
        const g = svg('g', { class: 'cell', 'data-cell': `${t},${p}`, 'data-total': this.total[t * k + p] });
        const rect = svg('rect', { x: pad + p * size, y: pad + t * size, width: size - 1, height: size - 1 });
        const text = svg('text', { x: pad + p * size + size / 2, y: pad + t * size + size / 2 + 3, 'text-anchor': 'middle', class: 'cell-text' });
        const title = svg('title');
        g.append(rect, text, title);
        g.addEventListener('click', () => this.pick(t, p));
        root.append(g);
        this.cells.push({ g, rect, text, title, t, p });
      }
    }
    const correct = colourLegend('correct (diagonal)', shade(DIAGONAL));
    const wrong = colourLegend('wrong', shade(OFF_DIAGONAL));
    this.legends = [correct, wrong];
    this.root.append(root, el('div', { class: 'legend-note', text: 'selected samples per cell (log scale)' }), correct.node, wrong.node);
  }

  count(n, mask) {
    const out = new Int32Array(this.k * this.k);
    for (let i = 0; i < n; i++) {
      if (mask && !mask[i]) continue;
      const t = this.truth[i];
      const p = this.pred[i];
      if (t >= 0 && t < this.k && p >= 0 && p < this.k) out[t * this.k + p]++;
    }
    return out;
  }

  pick(t, p) {
    const key = 'confusion';
    if (this.active === `${t},${p}`) {
      this.active = null;
      this.app.setFilter(key, null);
      return;
    }
    this.active = `${t},${p}`;
    const mask = maskWhere(this.data.n, (i) => this.truth[i] === t && this.pred[i] === p);
    this.app.setFilter(key, mask, `true ${label(this.app.meta, t)} → predicted ${label(this.app.meta, p)}`);
  }

  clearActive() {
    this.active = null;
  }

  update(mask) {
    if (!this.cells) return;
    const selected = this.count(this.data.n, mask);
    const max = Math.max(1, ...selected);
    for (const cell of this.cells) {
      const s = selected[cell.t * this.k + cell.p];
      const total = this.total[cell.t * this.k + cell.p];
      const tint = shade(cell.t === cell.p ? DIAGONAL : OFF_DIAGONAL)(max > 1 ? Math.log(Math.max(s, 1)) / Math.log(max) : 1);
      cell.rect.setAttribute('fill', s ? `rgb(${tint})` : total ? '#eee' : '#fff');
      cell.rect.setAttribute('class', this.active === `${cell.t},${cell.p}` ? 'active' : total ? '' : 'zero');
      cell.g.setAttribute('data-selected', s);
      cell.text.textContent = s ? String(s) : '';
      cell.title.textContent = `true ${label(this.app.meta, cell.t)}, predicted ${label(this.app.meta, cell.p)}: ${s} of ${total} selected`;
    }
    let top = 0;
    for (const s of selected) if (s > top) top = s;
    for (const legend of this.legends) {
      legend.low.textContent = top ? '1' : '';
      legend.high.textContent = top ? top.toLocaleString('en') : 'none selected';
      legend.node.setAttribute('data-max', top);
    }
  }
}

const DIAGONAL = [78, 121, 167];
const OFF_DIAGONAL = [225, 87, 89];

// t in [0, 1] -> the colour over white at 15 % to 100 % opacity (one count to the largest, on a log scale).
function shade(rgb) {
  return (t) => rgb.map((c) => Math.round(255 - (0.15 + 0.85 * t) * (255 - c)));
}
