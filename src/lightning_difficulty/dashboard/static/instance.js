// Instance view: one sample's image, label, prediction, every score, and its nearest training
// neighbours at the input and at each probe (images with labels and distances).
import { getJSON, query } from './data.js';
import { classText, el, fmt, label } from './util.js';

const LEAD = ['label', 'prediction', 'correct', 'pattern', 'error_category', 'confusion', 'prediction_depth', 'kdn'];

export class InstanceView {
  constructor(container, app) {
    this.app = app;
    this.root = el('div', { class: 'view-body instance' });
    container.append(this.root);
    this.clear();
  }

  setData() {}

  update() {}

  clear() {
    this.root.replaceChildren(el('p', { class: 'empty', text: 'Click a point, a table row or a neighbour to open a sample.' }));
  }

  async open(split, index) {
    const app = this.app;
    let info;
    try {
      info = await getJSON(`instance?${query({ run: app.run, split, index })}`);
    } catch (error) {
      this.root.replaceChildren(el('p', { class: 'error', text: String(error.message || error) }));
      return;
    }
    const v = info.values;
    const head = el('div', { class: 'instance-head', 'data-split': split, 'data-index': index });
    const picture = el('div', { class: 'instance-image' });
    const facts = el('div', { class: 'facts' },
      el('h3', { text: `${split} #${index}` }),
      el('div', { text: `label ${classText(app.meta, v.label)} · predicted ${classText(app.meta, v.prediction)}` }));
    if (v.pattern !== undefined || v.error_category !== undefined) {
      facts.append(el('div', { text: `pattern ${fmt(v.pattern)} · error category ${fmt(v.error_category)}` }));
    }
    head.append(picture, facts);
    const keys = [...LEAD.filter((k) => k in v), ...Object.keys(v).filter((k) => !LEAD.includes(k) && k !== 'split' && k !== 'index')];
    const scores = el('dl', { class: 'scores' });
    for (const key of keys) scores.append(el('dt', { text: key, title: app.meta.columns?.[key]?.description || '' }), el('dd', { text: fmt(v[key], 4) }));
    const strips = el('div', { class: 'neighbours' });
    const wanted = [[split, [index]]];
    for (const probe of info.neighbours) {
      const row = el('div', { class: 'strip', 'data-probe': probe.probe }, el('span', { class: 'probe', text: probe.probe }));
      for (const item of probe.items) {
        const box = el('button', {
          class: `neighbour${item.label === v.label ? '' : ' other'}`,
          'data-index': item.index,
          title: `${item.split} #${item.index}`,
          onclick: () => app.openInstance(item.split, item.index),
        });
        box.append(el('span', { class: 'nlabel', text: `${label(app.meta, item.label)} · ${fmt(item.distance, 3)}` }));
        row.append(box);
        wanted.push([item.split, [item.index], box]);
      }
      strips.append(row);
    }
    this.root.replaceChildren(head, scores, info.neighbours.length ? el('h4', { text: 'nearest training neighbours' }) : '', strips);
    const store = app.thumbnails;
    if (!store || !info.thumbnail) return;
    const bySplit = new Map();
    for (const [s, ids] of wanted) bySplit.set(s, [...(bySplit.get(s) || []), ...ids]);
    for (const [s, ids] of bySplit) {
      const images = await store.get(s, ids);
      if (s === split && images.get(index)) picture.replaceChildren(store.canvas(images.get(index), 4));
      for (const [ws, [wi], box] of wanted) {
        if (box && ws === s && images.get(wi)) box.prepend(store.canvas(images.get(wi), 2));
      }
    }
  }
}
