// One selection shared by every view: the rows that pass every view's filter (an intersection).
export class Selection {
  constructor(n) {
    this.n = n;
    this.filters = new Map();  // key -> { mask: Uint8Array, label: string }
    this.all = new Uint8Array(n).fill(1);
    this.mask = this.all;
    this.count = n;
  }

  set(key, mask, label) {
    if (mask === null) this.filters.delete(key);
    else this.filters.set(key, { mask, label });
    this.recompute();
  }

  has(key) {
    return this.filters.has(key);
  }

  clear() {
    this.filters.clear();
    this.recompute();
  }

  recompute() {
    const masks = [...this.filters.values()].map((f) => f.mask);
    if (masks.length === 0) {
      this.mask = this.all;
      this.count = this.n;
      return;
    }
    const out = new Uint8Array(this.n);
    let count = 0;
    for (let i = 0; i < this.n; i++) {
      let keep = 1;
      for (let m = 0; m < masks.length; m++) {
        if (!masks[m][i]) { keep = 0; break; }
      }
      out[i] = keep;
      count += keep;
    }
    this.mask = out;
    this.count = count;
  }

  rows() {
    const out = new Int32Array(this.count);
    let k = 0;
    for (let i = 0; i < this.n; i++) if (this.mask[i]) out[k++] = i;
    return out;
  }
}

export function maskWhere(n, predicate) {
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) mask[i] = predicate(i) ? 1 : 0;
  return mask;
}
