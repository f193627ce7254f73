// Fetching from the plugin's routes and decoding the compact column format.
export async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

// Layout: uint32 header length, JSON header, padding to 8 bytes, then the typed arrays.
export function decodeColumns(buffer) {
  const length = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const base = 4 + length + ((8 - ((4 + length) % 8)) % 8);
  const columns = new Map();
  for (const spec of header.columns) {
    const offset = base + spec.offset;
    let values;
    if (spec.dtype === 'float32') values = new Float32Array(buffer, offset, header.n);
    else if (spec.dtype === 'int32') values = new Int32Array(buffer, offset, header.n);
    else values = new Uint8Array(buffer, offset, header.n);
    columns.set(spec.name, { ...spec, values });
  }
  return { n: header.n, columns };
}

export function query(params) {
  return Object.entries(params).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
}

// Thumbnails of one run: fetched in batches, kept as ImageData by (split, index).
export class Thumbnails {
  constructor(run, side) {
    this.run = run;
    this.side = side;
    this.cache = new Map();
  }

  async get(split, indices) {
    const missing = [...new Set(indices)].filter((i) => !this.cache.has(`${split}:${i}`));
    for (let start = 0; start < missing.length; start += 500) {
      const chunk = missing.slice(start, start + 500);
      const url = `thumbnails?${query({ run: this.run, split, indices: chunk.join(',') })}`;
      const response = await fetch(url);
      if (!response.ok) return new Map();
      const bytes = new Uint8Array(await response.arrayBuffer());
      const size = this.side * this.side;
      chunk.forEach((index, k) => {
        const rgba = new Uint8ClampedArray(size * 4);
        for (let p = 0; p < size; p++) {
          rgba[4 * p] = bytes[3 * (k * size + p)];
          rgba[4 * p + 1] = bytes[3 * (k * size + p) + 1];
          rgba[4 * p + 2] = bytes[3 * (k * size + p) + 2];
          rgba[4 * p + 3] = 255;
        }
        this.cache.set(`${split}:${index}`, new ImageData(rgba, this.side, this.side));
      });
    }
    return new Map(indices.map((i) => [i, this.cache.get(`${split}:${i}`)]));
  }

  canvas(image, scale = 2) {
    const c = document.createElement('canvas');
    c.width = this.side;
    c.height = this.side;
    c.style.width = `${this.side * scale}px`;
    c.style.height = `${this.side * scale}px`;
    c.className = 'thumb';
    if (image) c.getContext('2d').putImageData(image, 0, 0);
    return c;
  }
}
