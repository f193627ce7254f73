// Small DOM, colour and number helpers shared by the views.
export const SVGNS = 'http://www.w3.org/2000/svg';

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const child of children) node.append(child);
  return node;
}

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVGNS, tag);
  setAttrs(node, attrs);
  for (const child of children) node.append(child);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
}

// Ten categorical colours (distinct hues, readable on white).
export const CATEGORICAL = [
  '#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f',
  '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac',
  '#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#8c564b',
  '#e377c2', '#7f7f7f', '#bcbd22', '#17becf', '#393b79',
];

export function categorical(i) {
  return CATEGORICAL[((i % CATEGORICAL.length) + CATEGORICAL.length) % CATEGORICAL.length];
}

// Perceptual sequential scale (viridis: dark purple -> blue -> green -> yellow, even lightness steps,
// readable with colour-blindness), t in [0, 1]; 17 samples of the map, interpolated linearly.
const VIRIDIS = [
  [68, 1, 84], [72, 24, 106], [71, 45, 123], [66, 64, 134], [59, 82, 139], [51, 99, 141], [44, 114, 142],
  [38, 130, 142], [33, 145, 140], [31, 160, 136], [40, 174, 128], [63, 188, 115], [94, 201, 98],
  [132, 212, 75], [173, 220, 48], [216, 226, 25], [253, 231, 37],
];
export function viridis(t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
}

// A CSS left-to-right gradient of a colour function over [0, 1].
export function gradientCss(colour, steps = 8) {
  const stops = Array.from({ length: steps + 1 }, (_, i) => `rgb(${colour(i / steps)}) ${((100 * i) / steps).toFixed(1)}%`);
  return `linear-gradient(90deg, ${stops.join(', ')})`;
}

// Position of a count on a log colour scale from 1 (t = 0) to max (t = 1).
export function logShare(count, max) {
  return max > 1 ? Math.log(Math.max(count, 1)) / Math.log(max) : 1;
}

// Colour legend: title, low label, gradient bar, high label (the labels can be changed later).
export function colourLegend(title, colour, lo = '', hi = '') {
  const low = el('span', { class: 'legend-lo', text: lo });
  const high = el('span', { class: 'legend-hi', text: hi });
  const node = el('div', { class: 'colour-legend' }, el('span', { class: 'legend-title', text: title }), low,
    el('span', { class: 'legend-bar', style: `background: ${gradientCss(colour)}` }), high);
  return { node, low, high };
}

export function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

export function fmt(value, digits = 3) {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return '—';
    if (Number.isInteger(value)) return String(value);
    return value.toPrecision(digits);
  }
  return String(value);
}

export function finiteRange(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi ? [lo, hi] : [0, 1];
}

// Bin assignment for one numeric column: integer columns with few values get one bin per value.
export function binning(column, maxBins) {
  const values = column.values;
  const [lo, hi] = finiteRange(values);
  const integral = column.kind === 'int' || column.kind === 'bool';
  let bins;
  let edges;
  if (integral && hi - lo + 1 <= maxBins) {
    bins = hi - lo + 1;
    edges = Array.from({ length: bins + 1 }, (_, i) => lo - 0.5 + i);
  } else {
    bins = maxBins;
    const width = hi > lo ? (hi - lo) / bins : 1;
    edges = Array.from({ length: bins + 1 }, (_, i) => lo + i * width);
  }
  const codes = new Int16Array(values.length);
  const span = edges[bins] - edges[0];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!(v === v)) { codes[i] = -1; continue; }  // NaN: not binned
    let b = Math.floor(((v - edges[0]) / span) * bins);
    if (b >= bins) b = bins - 1;
    if (b < 0) b = 0;
    codes[i] = b;
  }
  return { bins, edges, codes, integral, lo, hi };
}

export function label(meta, cls) {
  const names = meta.class_names || [];
  return cls >= 0 && cls < names.length ? names[cls] : String(cls);
}

// A class shown once: its name, preceded by the id only when the name is not the id ("3 cat", but "6").
export function classText(meta, cls) {
  const name = label(meta, cls);
  return name === String(cls) ? name : `${cls} ${name}`;
}

// Whether a column has at least one value (not every entry NaN).
export function hasValues(column) {
  const values = column.values;
  for (let i = 0; i < values.length; i++) if (values[i] === values[i]) return true;
  return false;
}
