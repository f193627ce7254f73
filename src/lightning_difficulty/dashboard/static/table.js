// Table of the selected samples: sortable by any column, paginated, with thumbnails and the dataset index.
import { classText, el, fmt } from './util.js';

const PAGE = 15;
const FIRST = ['index', 'label', 'prediction', 'correct'];

export class TableView {
  constructor(container, app) {
    this.app = app;
    this.root = el('div', { class: 'view-body table-view' });
    container.append(this.root);
  }

  setData(data) {
    this.data = data;
    this.page = 0;
    this.sortKey = this.sortKey && data.columns.has(this.sortKey) ? this.sortKey : 'index';
    this.sortDesc = this.sortDesc ?? false;
    this.orders = new Map();
    const names = [...data.columns.keys()].filter((c) => c !== 'split' && !c.startsWith('projection:'));
    this.names = [...FIRST.filter((c) => names.includes(c)), ...names.filter((c) => !FIRST.includes(c))];
    this.root.replaceChildren();
    this.info = el('span', { class: 'page-info' });
    this.prev = el('button', { text: '‹ prev', onclick: () => this.turn(-1) });
    this.next = el('button', { text: 'next ›', onclick: () => this.turn(1) });
    this.body = el('tbody');
    const head = el('tr', {}, el('th', { text: 'image' }));
    for (const name of this.names) {
      head.append(el('th', { 'data-column': name, title: 'sort', onclick: () => this.sortBy(name) }, name));
    }
    this.head = head;
    this.root.append(el('div', { class: 'pager' }, this.prev, this.info, this.next),
      el('div', { class: 'table-scroll' }, el('table', { class: 'rows' }, el('thead', {}, head), this.body)));
  }

  // Row order for one column and direction (NaN / missing always last), computed once.
  order(key, desc) {
    const id = `${key}:${desc}`;
    if (this.orders.has(id)) return this.orders.get(id);
    const column = this.data.columns.get(key);
    const values = column.values;
    const n = this.data.n;
    const rows = new Int32Array(n);
    for (let i = 0; i < n; i++) rows[i] = i;
    const sign = desc ? -1 : 1;
    let cmp;
    if (column.kind === 'category') {
      const rank = column.categories.map((_, i) => i);  // categories arrive sorted
      cmp = (a, b) => {
        const va = values[a] < 0 ? Infinity : rank[values[a]];
        const vb = values[b] < 0 ? Infinity : rank[values[b]];
        return va === vb ? a - b : va === Infinity ? 1 : vb === Infinity ? -1 : sign * (va - vb);
      };
    } else {
      cmp = (a, b) => {
        const va = values[a];
        const vb = values[b];
        const na = va !== va;
        const nb = vb !== vb;
        if (na || nb) return na && nb ? a - b : na ? 1 : -1;
        return va === vb ? a - b : sign * (va - vb);
      };
    }
    rows.sort(cmp);
    this.orders.set(id, rows);
    return rows;
  }

  sortBy(name) {
    if (this.sortKey === name) this.sortDesc = !this.sortDesc;
    else { this.sortKey = name; this.sortDesc = false; }
    this.page = 0;
    this.update(this.mask, this.count);
  }

  turn(delta) {
    const pages = Math.max(1, Math.ceil(this.count / PAGE));
    this.page = Math.max(0, Math.min(pages - 1, this.page + delta));
    this.render();
  }

  update(mask, count) {
    this.mask = mask;
    this.count = count;
    const order = this.order(this.sortKey, this.sortDesc);
    const rows = new Int32Array(count);
    let k = 0;
    for (let j = 0; j < order.length; j++) if (mask[order[j]]) rows[k++] = order[j];
    this.rows = rows;
    const pages = Math.max(1, Math.ceil(count / PAGE));
    if (this.page >= pages) this.page = pages - 1;
    for (const th of this.head.children) {
      const name = th.getAttribute('data-column');
      th.classList.toggle('sorted', name === this.sortKey);
      th.setAttribute('data-dir', name === this.sortKey ? (this.sortDesc ? 'desc' : 'asc') : '');
    }
    this.root.setAttribute('data-selected', count);
    this.render();
  }

  cell(name, row) {
    const column = this.data.columns.get(name);
    const v = column.values[row];
    if (column.kind === 'category') return v < 0 ? '—' : column.categories[v];
    if (column.kind === 'bool') return v ? '✓' : '✗';
    if (name === 'label' || name === 'prediction') return classText(this.app.meta, v);
    return fmt(v);
  }

  render() {
    const start = this.page * PAGE;
    const page = Array.from(this.rows.subarray(start, start + PAGE));
    this.info.textContent = this.count ? `rows ${start + 1}–${start + page.length} of ${this.count}` : 'no rows selected';
    this.prev.disabled = this.page === 0;
    this.next.disabled = start + PAGE >= this.count;
    const index = this.data.columns.get('index').values;
    const thumbs = new Map();
    this.body.replaceChildren(...page.map((row) => {
      const holder = el('td', { class: 'thumb-cell' });
      thumbs.set(index[row], holder);
      const tr = el('tr', { 'data-index': index[row], onclick: () => this.app.openInstance(this.app.split, index[row]) }, holder);
      for (const name of this.names) tr.append(el('td', { text: this.cell(name, row) }));
      return tr;
    }));
    const store = this.app.thumbnails;
    if (store && this.app.splitMeta.thumbnails && page.length) {
      const split = this.app.split;
      store.get(split, [...thumbs.keys()]).then((images) => {
        if (this.app.split !== split) return;
        for (const [i, holder] of thumbs) if (images.get(i)) holder.replaceChildren(store.canvas(images.get(i), 1.5));
      });
    }
  }
}
