// Difficulty summary: a 2-D histogram for each pair of perspectives, correct and wrong samples side by side.
// By default the DifficultyEyes perspectives (model, data, human); any other perspective or score can be ticked.
import { binning, colourLegend, el, fmt, hasValues, logShare, svg, viridis } from './util.js';
import { maskWhere } from './selection.js';

const BINS = 10;
const CELL = 16;
const LEFT = 46;  // room for the y ticks and the y axis title
const BOTTOM = 30;  // room for the x ticks and the x axis title
const TOP = 4;
const RIGHT = 8;
const DOTS_UP_TO = 60;  // a group this small is drawn one dot per sample: on a 10 x 10 grid it is a few lone squares
const DOT_SELECTED = '#e8590c';
const DOT_OTHER = '#c8c8c8';
// DifficultyEyes' three perspectives, each the first of its columns present (prediction depth is the model's,
// as in the report's taxonomy; confusion stands in without PredictionDepth).
const EYES = [['prediction_depth', 'confusion'], ['kdn', 'kdn:input'], ['human_difficulty']];

// The summary's columns when nothing was ticked: one per DifficultyEyes perspective, topped up to two.
export function defaultPerspectives(available) {
  const chosen = EYES.map((names) => names.find((c) => available.includes(c))).filter(Boolean);
  for (const c of available) if (chosen.length < 2 && !chosen.includes(c)) chosen.push(c);
  return chosen;
}

export class SummaryView {
  constructor(container, app) {
    this.app = app;
    this.ticked = null;  // columns ticked by the user, kept across splits and runs; null: the defaults
    this.controls = el('div', { class: 'summary-controls' });
    this.root = el('div', { class: 'view-body summary' });
    container.append(this.controls, this.root);
  }

  setData(data, meta) {
    this.data = data;
    this.active = null;  // a new split starts with no filter
    const usable = (c) => data.columns.has(c) && data.columns.get(c).kind !== 'category' && hasValues(data.columns.get(c));  // all-NaN in this split: left out
    const perspectives = (meta.perspectives || []).filter(usable);
    const others = (meta.score_columns || []).filter((c) => usable(c) && !perspectives.includes(c));
    this.choices = [...perspectives, ...others];
    this.defaults = defaultPerspectives(perspectives);
    this.correct = data.columns.get('correct')?.values ?? null;
    this.index = data.columns.get('index').values;
    this.bins = new Map();
    this.renderControls(perspectives, others);
    this.build();
  }

  shown() {
    const wanted = this.ticked ?? this.defaults;
    return this.choices.filter((c) => wanted.includes(c));
  }

  renderControls(perspectives, others) {
    const shown = this.shown();
    const box = (c) => el('label', { class: 'pick' },
      el('input', { type: 'checkbox', 'data-column': c, checked: shown.includes(c), onchange: () => this.retick() }), c);
    this.controls.replaceChildren();
    if (this.choices.length < 2) return;
    this.controls.append(el('span', { class: 'pick-title', text: 'pairs of ' }), ...perspectives.map(box));
    if (others.length) {
      const more = el('details', { class: 'more-scores' }, el('summary', { text: `other scores (${others.length})` }), ...others.map(box));
      more.open = others.some((c) => shown.includes(c));
      this.controls.append(more);
    }
  }

  retick() {
    this.ticked = [...this.controls.querySelectorAll('input[type=checkbox]')].filter((b) => b.checked).map((b) => b.dataset.column);
    this.build();
    const pairs = this.maps.map((m) => `${m.xName}|${m.yName}|`);
    if (this.active && !pairs.some((p) => this.active.startsWith(p))) {
      this.active = null;
      this.app.setFilter('summary', null);  // the filtered pair is gone: its filter goes too (redraws every view)
    } else {
      this.update(this.app.selection.mask);
    }
  }

  binOf(name) {
    if (!this.bins.has(name)) this.bins.set(name, binning(this.data.columns.get(name), BINS));
    return this.bins.get(name);
  }

  build() {
    this.root.replaceChildren();
    this.maps = [];
    const names = this.shown();
    if (names.length < 2) {
      const text = this.choices.length < 2 ? 'Fewer than two perspective columns in this run.' : 'Tick two or more columns to compare them in pairs.';
      this.root.append(el('p', { class: 'empty', text }));
      return;
    }
    for (let a = 0; a < names.length; a++) {
      for (let b = a + 1; b < names.length; b++) {
        const row = el('div', { class: 'pair', 'data-pair': `${names[a]}|${names[b]}` });
        for (const outcome of this.correct ? [1, 0] : [null]) {
          const map = this.heatmap(names[a], names[b], outcome);
          this.maps.push(map);
          row.append(map.box);
        }
        this.root.append(row);
      }
    }
  }

  heatmap(xName, yName, outcome) {
    const bx = this.binOf(xName);
    const by = this.binOf(yName);
    const group = [];
    for (let r = 0; r < this.data.n; r++) {
      if (bx.codes[r] < 0 || by.codes[r] < 0) continue;
      if (outcome === null || this.correct[r] === outcome) group.push(r);
    }
    const dots = group.length <= DOTS_UP_TO;
    const pw = bx.bins * CELL;
    const ph = by.bins * CELL;
    const w = LEFT + pw + RIGHT;
    const h = TOP + ph + BOTTOM;
    const title = outcome === null ? '' : outcome ? 'correct' : 'wrong';
    const box = el('figure', { class: 'heatmap', 'data-pair': `${xName}|${yName}`, 'data-outcome': title, 'data-mode': dots ? 'dots' : 'cells' });
    const how = dots && group.length ? ', a dot per sample' : '';
    box.append(el('figcaption', { text: `${title || 'all samples'} (n=${group.length})${how}`, title: dots ? 'click a dot to open the sample' : 'click a cell to select its samples' }));
    const root = svg('svg', { width: w, height: h });
    this.axes(root, bx, by, xName, yName, pw, ph, h);
    const map = { xName, yName, outcome, bx, by, box, cells: [], dots: [], mode: dots ? 'dots' : 'cells' };
    if (dots) {
      for (const r of group) map.dots.push(this.dot(root, map, r, pw, ph));
      const swatch = (colour, text) => el('span', { class: 'key' }, el('i', { style: `background:${colour}` }), text);
      map.legend = null;
      box.append(root, el('div', { class: 'colour-legend' }, swatch(DOT_SELECTED, 'selected'), swatch(DOT_OTHER, 'not selected')));
    } else {
      for (let j = 0; j < by.bins; j++) {
        for (let i = 0; i < bx.bins; i++) {
          const rect = svg('rect', { x: LEFT + i * CELL, y: TOP + (by.bins - 1 - j) * CELL, width: CELL - 1, height: CELL - 1, 'data-cell': `${i},${j}` });
          const tip = svg('title');
          rect.append(tip);
          rect.addEventListener('click', () => this.pick(map, i, j));
          root.append(rect);
          map.cells.push({ rect, tip, i, j });
        }
      }
      map.legend = colourLegend('selected per cell (log)', viridis, '1', '');
      box.append(root, map.legend.node);
    }
    return map;
  }

  // Ticks at both ends (and the middle of a continuous scale) and a title on each axis.
  axes(root, bx, by, xName, yName, pw, ph, h) {
    const ticks = (bin) => {
      if (bin.integral && bin.bins === bin.hi - bin.lo + 1) return [[0.5 / bin.bins, bin.lo], [1 - 0.5 / bin.bins, bin.hi]];
      return [[0, bin.edges[0]], [0.5, bin.edges[bin.bins / 2 | 0] ?? bin.edges[0]], [1, bin.edges[bin.bins]]];
    };
    root.append(svg('rect', { class: 'frame', x: LEFT - 1, y: TOP - 1, width: pw + 1, height: ph + 1 }));
    for (const [t, value] of ticks(bx)) {
      const x = LEFT + t * pw;
      const anchor = t === 0 ? 'start' : t === 1 ? 'end' : 'middle';
      root.append(svg('text', { x, y: TOP + ph + 10, class: 'tick', 'text-anchor': anchor, text: fmt(value, 2) }));
    }
    for (const [t, value] of ticks(by)) {
      const y = TOP + (1 - t) * ph + (t === 1 ? 8 : t === 0 ? 0 : 3);
      root.append(svg('text', { x: LEFT - 3, y, class: 'tick', 'text-anchor': 'end', text: fmt(value, 2) }));
    }
    root.append(svg('text', { x: LEFT + pw / 2, y: h - 3, class: 'axis-title', 'data-axis': 'x', 'text-anchor': 'middle', text: `${xName} →` }));
    const cy = TOP + ph / 2;
    root.append(svg('text', { x: 10, y: cy, class: 'axis-title', 'data-axis': 'y', 'text-anchor': 'middle', transform: `rotate(-90 10 ${cy})`, text: `${yName} →` }));
  }

  // One sample as a dot at its values (integer values spread a little, so equal ones stay apart).
  dot(root, map, r, pw, ph) {
    const place = (bin, v, span) => {
      const lo = bin.edges[0];
      const hi = bin.edges[bin.bins];
      let t = (v - lo) / (hi - lo || 1);
      if (bin.integral) t += (jitter(r, bin === map.bx ? 1 : 2) * 0.6) / bin.bins;
      return Math.min(span - 3, Math.max(3, t * span));
    };
    const x = this.data.columns.get(map.xName).values[r];
    const y = this.data.columns.get(map.yName).values[r];
    const circle = svg('circle', { class: 'sample', cx: LEFT + place(map.bx, x, pw), cy: TOP + ph - place(map.by, y, ph), r: 4, 'data-index': this.index[r] });
    circle.append(svg('title', { text: `#${this.index[r]}: ${map.xName} ${fmt(x, 3)}, ${map.yName} ${fmt(y, 3)}` }));
    circle.addEventListener('click', () => this.app.openInstance(this.app.split, this.index[r]));
    root.append(circle);
    return { circle, r };
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
    const range = (bin, b) => `[${fmt(bin.edges[b], 2)}, ${fmt(bin.edges[b + 1], 2)})`;
    const label = `${map.xName} ${range(map.bx, i)}, ${map.yName} ${range(map.by, j)}${map.outcome === null ? '' : map.outcome ? ', correct' : ', wrong'}`;
    this.app.setFilter('summary', maskWhere(this.data.n, this.inCell(map, i, j)), label);
  }

  clearActive() {
    this.active = null;
  }

  update(mask) {
    for (const map of this.maps || []) {
      if (map.mode === 'dots') this.updateDots(map, mask);
      else this.updateCells(map, mask);
    }
  }

  updateDots(map, mask) {
    let selected = 0;
    for (const { circle, r } of map.dots) {
      const on = Boolean(mask[r]);
      selected += on ? 1 : 0;
      circle.setAttribute('fill', on ? DOT_SELECTED : DOT_OTHER);
      circle.setAttribute('data-selected', on ? 1 : 0);
      if (on) circle.parentNode.append(circle);  // selected dots drawn on top
    }
    map.box.setAttribute('data-selected', selected);
  }

  updateCells(map, mask) {
    const nx = map.bx.bins;
    const counts = new Int32Array(nx * map.by.bins);
    const totals = new Int32Array(nx * map.by.bins);
    const cx = map.bx.codes;
    const cy = map.by.codes;
    for (let r = 0; r < this.data.n; r++) {
      if (map.outcome !== null && this.correct[r] !== map.outcome) continue;
      const x = cx[r];
      const y = cy[r];
      if (x < 0 || y < 0) continue;
      totals[y * nx + x]++;
      if (mask[r]) counts[y * nx + x]++;
    }
    let max = 0;
    for (const c of counts) if (c > max) max = c;
    let selected = 0;
    for (const cell of map.cells) {
      const c = counts[cell.j * nx + cell.i];
      const t = totals[cell.j * nx + cell.i];
      selected += c;
      const id = `${map.xName}|${map.yName}|${map.outcome}|${cell.i},${cell.j}`;
      cell.rect.setAttribute('fill', c ? `rgb(${viridis(logShare(c, max))})` : t ? '#e6e6e6' : '#fafafa');
      cell.rect.setAttribute('class', this.active === id ? 'active' : '');
      cell.rect.setAttribute('data-selected', c);
      cell.tip.textContent = `${map.xName} [${fmt(map.bx.edges[cell.i], 2)}, ${fmt(map.bx.edges[cell.i + 1], 2)}), ${map.yName} [${fmt(map.by.edges[cell.j], 2)}, ${fmt(map.by.edges[cell.j + 1], 2)}): ${c} of ${t} selected`;
    }
    map.legend.low.textContent = max ? '1' : '';
    map.legend.high.textContent = max ? max.toLocaleString('en') : 'none selected';
    map.legend.node.setAttribute('data-max', max);
    map.box.setAttribute('data-selected', selected);
  }
}

// A fixed pseudo-random offset in [-0.5, 0.5) per row and axis (the same on every redraw).
function jitter(row, axis) {
  const h = Math.imul(row + 1, 2654435761) ^ Math.imul(axis, 40503);
  return ((h >>> 0) % 1000) / 1000 - 0.5;
}
