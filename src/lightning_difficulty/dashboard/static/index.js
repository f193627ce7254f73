// Entry point of the Difficulty dashboard (loaded by TensorBoard in an iframe; no build step, no network).
// Every view shares one selection: the intersection of the filters set by brushing or clicking in them.
import { ConfusionView } from './confusion.js';
import { decodeColumns, getJSON, query, Thumbnails } from './data.js';
import { FlowView } from './flow.js';
import { HistogramView } from './histograms.js';
import { InstanceView } from './instance.js';
import { ScatterView } from './scatter.js';
import { Selection } from './selection.js';
import { SubsetView } from './subsets.js';
import { SummaryView } from './summary.js';
import { TableView } from './table.js';
import { el } from './util.js';

const SECTIONS = [
  ['summary', 'Difficulty summary', SummaryView],
  ['confusion', 'Confusion matrix', ConfusionView],
  ['projection', 'Projection', ScatterView],
  ['flow', 'Difficulty flow', FlowView],
  ['distributions', 'Distributions', HistogramView],
  ['instance', 'Instance', InstanceView],
  ['table', 'Selected samples', TableView],
  ['subsets', 'Subsets', SubsetView],
];

class App {
  constructor(root) {
    this.root = root;
    this.timings = [];
    this.renders = [];
    this.colorBy = 'label';
    this.runSelect = el('select', { class: 'run-select', onchange: () => this.loadRun(this.runSelect.value) });
    this.splitSelect = el('select', { class: 'split-select', onchange: () => this.loadSplit(this.splitSelect.value) });
    this.colorSelect = el('select', { class: 'color-select', onchange: () => this.recolour(this.colorSelect.value) });
    this.counter = el('span', { class: 'count', role: 'status' });
    this.chips = el('span', { class: 'filters' });
    this.status = el('span', { class: 'status' });
    const bar = el('header', { class: 'bar' },
      el('strong', { text: 'Difficulty' }),
      el('label', {}, 'run ', this.runSelect), el('label', {}, 'split ', this.splitSelect),
      el('label', {}, 'colour by ', this.colorSelect), this.counter,
      el('button', { class: 'reset', text: 'reset selection', onclick: () => this.reset() }), this.chips, this.status);
    const grid = el('main', { class: 'grid' });
    this.views = {};
    for (const [id, title, View] of SECTIONS) {
      const section = el('section', { id, class: `panel panel-${id}` }, el('h2', { text: title }));
      grid.append(section);
      this.views[id] = new View(section, this);
    }
    root.replaceChildren(bar, grid);
  }

  async init() {
    const { runs } = await getJSON('runs');
    if (!runs.length) {
      this.status.textContent = 'No run under the logdir holds difficulty/scores.parquet.';
      return;
    }
    this.runSelect.replaceChildren(...runs.map((r) => el('option', { value: r, text: r })));
    await this.loadRun(runs[0]);
  }

  async loadRun(run) {
    this.run = run;
    this.runSelect.value = run;
    this.meta = await getJSON(`meta?${query({ run })}`);
    this.thumbnails = this.meta.thumbnail_side ? new Thumbnails(run, this.meta.thumbnail_side) : null;
    const splits = Object.keys(this.meta.splits);
    this.splitSelect.replaceChildren(...splits.map((s) => el('option', { value: s, text: `${s} (${this.meta.splits[s].num_samples})` })));
    await this.loadSplit(splits.includes('val') ? 'val' : splits[0]);
  }

  async chooseSplit(split) {
    if (split !== this.split) await this.loadSplit(split);
  }

  async loadSplit(split) {
    const start = performance.now();
    this.split = split;
    this.splitSelect.value = split;
    this.splitMeta = this.meta.splits[split];
    this.status.textContent = 'loading…';
    const response = await fetch(`columns?${query({ run: this.run, split })}`);
    if (!response.ok) {
      this.status.textContent = `could not load ${split}: HTTP ${response.status}`;
      return;
    }
    this.data = decodeColumns(await response.arrayBuffer());
    this.selection = new Selection(this.data.n);
    this.fillColours();
    for (const view of Object.values(this.views)) view.setData(this.data, this.meta);
    this.views.instance.clear();
    this.refresh();
    await new Promise((resolve) => requestAnimationFrame(() => resolve()));
    this.status.textContent = '';
    this.renders.push({ split, ms: performance.now() - start, at: performance.now() });
    document.body.setAttribute('data-ready', `${this.run}/${split}`);
  }

  fillColours() {
    const names = [...this.data.columns.keys()].filter((c) => !['index', 'split'].includes(c) && !c.startsWith('projection:'));
    if (!names.includes(this.colorBy)) this.colorBy = names.includes('label') ? 'label' : names[0];
    this.colorSelect.replaceChildren(...names.map((c) => el('option', { value: c, text: c })));
    this.colorSelect.value = this.colorBy;
  }

  recolour(name) {
    this.colorBy = name;
    this.views.projection.colourBy(name);
  }

  // Set (or, with mask null, remove) one view's filter, and redraw every view; the time is kept.
  setFilter(key, mask, label) {
    const start = performance.now();
    this.selection.set(key, mask, label);
    this.refresh();
    this.timings.push({ key, ms: performance.now() - start });
  }

  reset() {
    this.selection.clear();
    for (const view of Object.values(this.views)) view.clearActive?.();
    this.refresh();
  }

  refresh() {
    const { mask, count, n } = this.selection;
    this.counter.textContent = `${count.toLocaleString('en')} of ${n.toLocaleString('en')} selected`;
    this.counter.setAttribute('data-selected', count);
    this.counter.setAttribute('data-total', n);
    this.chips.replaceChildren(...[...this.selection.filters].map(([key, f]) => el('span', { class: 'chip', 'data-key': key, text: f.label || key })));
    for (const view of Object.values(this.views)) view.update(mask, count);
  }

  describeFilters() {
    return [...this.selection.filters.values()].map((f) => f.label).join(' AND ');
  }

  indexOf(row) {
    return this.data.columns.get('index').values[row];
  }

  openInstance(split, index) {
    return this.views.instance.open(split, index);
  }
}

export async function render() {
  document.head.append(el('link', { rel: 'stylesheet', href: 'static/style.css' }));
  const app = new App(document.body);
  window.difficultyDashboard = app;
  try {
    await app.init();
  } catch (error) {
    app.status.textContent = `error: ${error.message || error}`;
    throw error;
  }
}
