// Difficulty flow: where each probe's k-NN vote sends the samples, until they settle (prediction depth).
// Per column (probe): top node = settled and correct, one node per predicted class, bottom = settled and wrong.
import { categorical, el, label, svg } from './util.js';
import { maskWhere } from './selection.js';

const H = 300;
const NODE_W = 12;
const GAP = 2;

export class FlowView {
  constructor(container, app) {
    this.app = app;
    this.root = el('div', { class: 'view-body flow' });
    container.append(this.root);
  }

  setData(data, meta) {
    this.root.replaceChildren();
    this.data = data;
    this.probes = (meta.probes || []).filter((p) => data.columns.has(`knn:${p}`));
    if (this.probes.length === 0) {
      this.nodes = null;
      this.root.append(el('p', { class: 'empty', text: 'No k-NN probe columns (knn:<probe>) in this run.' }));
      return;
    }
    const K = meta.class_names.length;
    this.K = K;
    this.C = K + 3;  // classes, settled correct, settled wrong, unknown vote
    const P = this.probes.length;
    const n = data.n;
    const depth = data.columns.get('prediction_depth');
    const correct = data.columns.get('correct');
    this.codes = new Uint8Array(P * n);
    for (let p = 0; p < P; p++) {
      const votes = data.columns.get(`knn:${this.probes[p]}`).values;
      for (let i = 0; i < n; i++) {
        let code;
        if (depth && depth.values[i] <= p) code = correct && !correct.values[i] ? K + 1 : K;
        else code = votes[i] >= 0 && votes[i] < K ? votes[i] : K + 2;
        this.codes[p * n + i] = code;
      }
    }
    const totals = this.count(null);
    this.layout(totals, meta);
  }

  order() {
    const K = this.K;
    return [K, ...Array.from({ length: K }, (_, c) => c), K + 2, K + 1];
  }

  nodeName(code) {
    if (code === this.K) return 'settled ✓';
    if (code === this.K + 1) return 'settled ✗';
    if (code === this.K + 2) return 'no vote';
    return label(this.app.meta, code);
  }

  count(mask) {
    const { C, data } = this;
    const n = data.n;
    const P = this.probes.length;
    const nodes = new Int32Array(P * C);
    const links = new Int32Array(Math.max(P - 1, 0) * C * C);
    for (let i = 0; i < n; i++) {
      if (mask && !mask[i]) continue;
      let prev = -1;
      for (let p = 0; p < P; p++) {
        const code = this.codes[p * n + i];
        nodes[p * C + code]++;
        if (p > 0) links[((p - 1) * C + prev) * C + code]++;
        prev = code;
      }
    }
    return { nodes, links };
  }

  layout(totals, meta) {
    const { C, data } = this;
    const P = this.probes.length;
    const width = Math.max(360, 110 * P);
    const step = (width - 90) / Math.max(P - 1, 1);
    const scale = (H - GAP * C) / Math.max(data.n, 1);
    const root = svg('svg', { width, height: H + 36, class: 'flow-svg' });
    const linkLayer = svg('g', { class: 'links' });
    const nodeLayer = svg('g', { class: 'nodes' });
    root.append(linkLayer, nodeLayer);
    this.scale = scale;
    this.nodes = [];
    this.links = [];
    const pos = [];  // pos[p][code] = {x, y, h}
    for (let p = 0; p < P; p++) {
      const x = 40 + p * step;
      root.append(svg('text', { x: x + NODE_W / 2, y: H + 30, 'text-anchor': 'middle', class: 'tick', text: this.probes[p] }));
      pos.push({});
      let y = 4;
      for (const code of this.order()) {
        const total = totals.nodes[p * C + code];
        if (!total) continue;
        const h = Math.max(1, total * scale);
        pos[p][code] = { x, y, h, out: y, in: y };
        const colour = code < this.K ? categorical(code) : code === this.K ? '#59a14f' : code === this.K + 1 ? '#e15759' : '#999';
        const g = svg('g', { class: 'node', 'data-node': `${p}:${code}`, 'data-total': total });
        const frame = svg('rect', { x, y, width: NODE_W, height: h, fill: '#f4f4f4', stroke: colour, 'stroke-width': 1.5 });
        const fill = svg('rect', { x, y, width: NODE_W, height: 0, fill: colour });
        const tip = svg('title');
        g.append(frame, fill, tip);
        if (p === 0 || code >= this.K) g.append(svg('text', { x: x - 3, y: y + h / 2 + 3, 'text-anchor': 'end', class: 'tick', text: h > 8 ? this.nodeName(code) : '' }));
        g.addEventListener('click', () => this.pick(`node ${p}:${code}`, (i) => this.codes[p * data.n + i] === code, `${this.probes[p]}: ${this.nodeName(code)}`));
        nodeLayer.append(g);
        this.nodes.push({ p, code, fill, tip, g, total, y, h });
        y += h + GAP;
      }
    }
    for (let p = 0; p + 1 < P; p++) {
      for (const a of this.order()) {
        for (const b of this.order()) {
          const total = totals.links[(p * C + a) * C + b];
          if (!total) continue;
          const w = total * scale;
          const s = pos[p][a];
          const t = pos[p + 1][b];
          const y0 = s.out + w / 2;
          const y1 = t.in + w / 2;
          s.out += w;
          t.in += w;
          const x0 = s.x + NODE_W;
          const x1 = t.x;
          const mid = (x0 + x1) / 2;
          const d = `M${x0},${y0} C${mid},${y0} ${mid},${y1} ${x1},${y1}`;
          const colour = a < this.K ? categorical(a) : a === this.K ? '#59a14f' : '#e15759';
          const g = svg('g', { class: 'link', 'data-link': `${p}:${a}:${b}`, 'data-total': total });
          const base = svg('path', { d, stroke: '#ccc', 'stroke-width': Math.max(0.5, w), fill: 'none', 'stroke-opacity': 0.45 });
          const sel = svg('path', { d, stroke: colour, 'stroke-width': 0, fill: 'none', 'stroke-opacity': 0.75 });
          const tip = svg('title');
          g.append(base, sel, tip);
          const n = data.n;
          g.addEventListener('click', () => this.pick(`link ${p}:${a}:${b}`, (i) => this.codes[p * n + i] === a && this.codes[(p + 1) * n + i] === b,
            `${this.probes[p]} ${this.nodeName(a)} → ${this.probes[p + 1]} ${this.nodeName(b)}`));
          linkLayer.append(g);
          this.links.push({ p, a, b, sel, tip, g, total });
        }
      }
    }
    this.root.append(root);
  }

  pick(id, predicate, text) {
    if (this.active === id) {
      this.active = null;
      this.app.setFilter('flow', null);
      return;
    }
    this.active = id;
    this.app.setFilter('flow', maskWhere(this.data.n, predicate), text);
  }

  clearActive() {
    this.active = null;
  }

  update(mask) {
    if (!this.nodes) return;
    const { nodes, links } = this.count(mask);
    const C = this.C;
    for (const node of this.nodes) {
      const s = nodes[node.p * C + node.code];
      node.fill.setAttribute('height', node.h * (s / node.total));
      node.g.setAttribute('data-selected', s);
      node.g.classList.toggle('active', this.active === `node ${node.p}:${node.code}`);
      node.tip.textContent = `${this.probes[node.p]}: ${this.nodeName(node.code)} — ${s} of ${node.total} selected`;
    }
    for (const link of this.links) {
      const s = links[(link.p * C + link.a) * C + link.b];
      link.sel.setAttribute('stroke-width', s * this.scale);
      link.g.setAttribute('data-selected', s);
      link.g.classList.toggle('active', this.active === `link ${link.p}:${link.a}:${link.b}`);
      link.tip.textContent = `${this.nodeName(link.a)} → ${this.nodeName(link.b)}: ${s} of ${link.total} selected`;
    }
  }
}
