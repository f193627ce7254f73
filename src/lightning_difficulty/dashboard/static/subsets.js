// Subsets: name the current selection, combine named selections (union / intersection / difference),
// apply one as the selection, and save one to the run folder as a hard-subset manifest.
import { getJSON, query } from './data.js';
import { el } from './util.js';

export class SubsetView {
  constructor(container, app) {
    this.app = app;
    this.items = new Map();  // name -> { split, indices: Int32Array (sorted), saved }
    this.root = el('div', { class: 'view-body subsets' });
    container.append(this.root);
    this.name = el('input', { type: 'text', placeholder: 'subset name', class: 'subset-name', maxlength: 64 });
    this.overwrite = el('input', { type: 'checkbox', class: 'overwrite' });
    this.message = el('div', { class: 'message', role: 'status' });
    this.list = el('ul', { class: 'subset-list' });
    this.root.append(
      el('div', { class: 'row' }, this.name,
        el('button', { class: 'keep', text: 'name selection', onclick: () => this.keep() }),
        el('button', { class: 'save', text: 'save to run', onclick: () => this.save() }),
        el('label', {}, this.overwrite, 'overwrite')),
      el('div', { class: 'row' }, 'combine ticked:',
        el('button', { class: 'op-union', text: '∪ union', onclick: () => this.combine('union') }),
        el('button', { class: 'op-intersection', text: '∩ intersection', onclick: () => this.combine('intersection') }),
        el('button', { class: 'op-difference', text: '∖ difference', onclick: () => this.combine('difference') })),
      this.list, this.message);
  }

  setData(data, meta) {
    this.data = data;
    for (const [name, item] of [...this.items]) if (item.saved) this.items.delete(name);
    for (const s of meta.subsets || []) this.items.set(s.name, { split: s.split, size: s.size, indices: null, saved: true });
    this.render();
  }

  update() {}

  say(text, error = false) {
    this.message.textContent = text;
    this.message.className = error ? 'message error' : 'message';
  }

  currentIndices() {
    const index = this.data.columns.get('index').values;
    const rows = this.app.selection.rows();
    return Int32Array.from(rows, (r) => index[r]).sort();
  }

  keep() {
    const name = this.name.value.trim() || `selection-${this.items.size + 1}`;
    this.items.set(name, { split: this.app.split, indices: this.currentIndices(), saved: false });
    this.say(`named ${name}: ${this.app.selection.count} samples`);
    this.render();
  }

  async indicesOf(name) {
    const item = this.items.get(name);
    if (!item.indices) {
      const body = await getJSON(`subset?${query({ run: this.app.run, name })}`);
      item.indices = Int32Array.from(body.indices).sort();
    }
    return item.indices;
  }

  async combine(op) {
    const ticked = [...this.list.querySelectorAll('input:checked')].map((box) => box.value);
    if (ticked.length < 2) { this.say('tick at least two subsets to combine', true); return; }
    const splits = new Set(ticked.map((n) => this.items.get(n).split));
    if (splits.size > 1) { this.say('the ticked subsets belong to different splits', true); return; }
    const sets = await Promise.all(ticked.map((n) => this.indicesOf(n)));
    let result = new Set(sets[0]);
    for (const other of sets.slice(1)) {
      const b = new Set(other);
      if (op === 'union') for (const i of b) result.add(i);
      else if (op === 'intersection') result = new Set([...result].filter((i) => b.has(i)));
      else result = new Set([...result].filter((i) => !b.has(i)));
    }
    const symbol = { union: '∪', intersection: '∩', difference: '∖' }[op];
    const name = this.name.value.trim() || ticked.join(symbol);
    this.items.set(name, { split: [...splits][0], indices: Int32Array.from(result).sort(), saved: false });
    this.say(`${name}: ${result.size} samples`);
    this.render();
  }

  async apply(name) {
    const item = this.items.get(name);
    if (item.split !== this.app.split) await this.app.chooseSplit(item.split);
    const indices = await this.indicesOf(name);
    const wanted = new Set(indices);
    const index = this.data.columns.get('index').values;
    const mask = new Uint8Array(this.data.n);
    for (let r = 0; r < this.data.n; r++) mask[r] = wanted.has(index[r]) ? 1 : 0;
    this.app.setFilter('subset', mask, `subset ${name}`);
  }

  async save() {
    const name = this.name.value.trim();
    if (!name) { this.say('type a name first', true); return; }
    if (this.app.selection.count === this.data.n && this.app.selection.filters.size === 0) {
      this.say('select some samples first (the whole split is selected)', true);
      return;
    }
    const body = {
      run: this.app.run, split: this.app.split, name, indices: Array.from(this.currentIndices()),
      overwrite: this.overwrite.checked, description: this.app.describeFilters(),
    };
    try {
      const reply = await getJSON('subsets', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      this.say(`saved ${reply.saved} (${body.indices.length} samples of ${body.split})`);
      for (const s of reply.subsets) if (!this.items.has(s.name) || this.items.get(s.name).saved) this.items.set(s.name, { split: s.split, size: s.size, indices: null, saved: true });
      this.render();
    } catch (error) {
      this.say(String(error.message || error), true);
    }
  }

  render() {
    this.list.replaceChildren(...[...this.items].map(([name, item]) => {
      const size = item.indices ? item.indices.length : item.size;
      return el('li', { 'data-name': name },
        el('input', { type: 'checkbox', value: name }),
        el('span', { class: 'sname', text: `${name}` }),
        el('span', { class: 'meta', text: ` ${item.split} · ${size}${item.saved ? ' · saved' : ''}` }),
        el('button', { class: 'apply', text: 'select', onclick: () => this.apply(name) }));
    }));
  }
}
