// The node map: one cell per node on a canvas, coloured by state. Full redraws only
// when the set of nodes changes; a changed node repaints its own cell. Exposes on the
// canvas data-node-count (cells drawn in the last full draw) and data-draws.

export const COLORS = {
  "unhealthy": "#e53935",
  "cordoned": "#757575",
  "preflight": "#fdd835",
  "borrowed": "#ff9800",
  "balloon": "#4db6ac",
  "full": "#1e88e5",
  "partly used": "#90caf9",
  "team": "#ab47bc",
  "free": "#37474f",
};

const collator = new Intl.Collator("en", { numeric: true });

export class NodeMap {
  constructor(canvas, { onHover, onClick } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { alpha: false });
    this.nodes = new Map(); // name -> row
    this.order = []; // names in drawing order
    this.index = new Map(); // name -> position
    this.dirty = new Set();
    this.layoutDirty = true;
    this.frame = 0;
    this.draws = 0;
    this.drawnAt = new Map(); // name -> Date.now() when its cell was last painted
    this.firstPaintMs = null; // performance.now() of the first full draw with nodes
    this.fullDrawMs = null; // how long the last full draw took
    this.cell = 8;
    this.cols = 1;
    this.onHover = onHover;
    this.onClick = onClick;
    canvas.addEventListener("mousemove", (e) => this._hover(e));
    canvas.addEventListener("mouseleave", () => this.onHover && this.onHover(null));
    canvas.addEventListener("click", (e) => {
      const n = this.nodeAtEvent(e);
      if (n && this.onClick) this.onClick(n, e);
    });
    new ResizeObserver(() => { this.layoutDirty = true; this._schedule(); }).observe(canvas.parentElement);
  }

  replace(rows) {
    this.nodes = new Map(rows.map((r) => [r.name, r]));
    this.layoutDirty = true;
    this._schedule();
  }

  update(changes) {
    for (const [name, row] of Object.entries(changes)) {
      if (row === null) {
        if (this.nodes.delete(name)) this.layoutDirty = true;
      } else {
        if (!this.nodes.has(name)) this.layoutDirty = true;
        this.nodes.set(name, row);
        this.dirty.add(name);
      }
    }
    this._schedule();
  }

  counts() {
    const c = {};
    for (const r of this.nodes.values()) c[r.state] = (c[r.state] || 0) + 1;
    return c;
  }

  _schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this._draw());
  }

  _layout() {
    const names = [...this.nodes.keys()];
    names.sort((a, b) => {
      const x = this.nodes.get(a), y = this.nodes.get(b);
      return collator.compare(x.pool, y.pool) || collator.compare(x.rack, y.rack) || collator.compare(a, b);
    });
    this.order = names;
    this.index = new Map(names.map((n, i) => [n, i]));
    const width = Math.max(200, this.canvas.parentElement.clientWidth - 2);
    const n = Math.max(1, names.length);
    const maxHeight = Math.max(240, Math.min(window.innerHeight * 0.6, 720));
    this.cell = Math.max(3, Math.min(20, Math.floor(Math.sqrt((width * maxHeight) / n))));
    this.cols = Math.max(1, Math.floor(width / this.cell));
    const rows = Math.ceil(n / this.cols);
    const dpr = window.devicePixelRatio || 1;
    this.canvas.style.height = `${rows * this.cell}px`;
    this.canvas.style.width = `${width}px`;
    this.canvas.width = Math.round(width * dpr);
    this.canvas.height = Math.round(rows * this.cell * dpr);
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  _paint(name, now) {
    const i = this.index.get(name);
    const row = this.nodes.get(name);
    if (i === undefined || !row) return;
    const s = this.cell, gap = s >= 5 ? 1 : 0;
    const x = (i % this.cols) * s, y = Math.floor(i / this.cols) * s;
    this.ctx.fillStyle = "#0b0e12";
    this.ctx.fillRect(x, y, s, s);
    this.ctx.fillStyle = COLORS[row.state] || "#ffffff";
    this.ctx.fillRect(x, y, s - gap, s - gap);
    this.drawnAt.set(name, now);
  }

  _draw() {
    this.frame = 0;
    const now = Date.now();
    if (this.layoutDirty) {
      const t0 = performance.now();
      this.layoutDirty = false;
      this.dirty.clear();
      this._layout();
      this.ctx.fillStyle = "#0b0e12";
      this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
      for (const name of this.order) this._paint(name, now);
      this.canvas.dataset.nodeCount = String(this.order.length);
      this.fullDrawMs = performance.now() - t0;
      if (this.firstPaintMs === null && this.order.length) this.firstPaintMs = performance.now();
    } else {
      for (const name of this.dirty) this._paint(name, now);
      this.dirty.clear();
    }
    this.draws += 1;
    this.canvas.dataset.draws = String(this.draws);
  }

  // Where a node's cell is, in CSS pixels of the canvas (for tooltips and tests).
  cellOf(name) {
    const i = this.index.get(name);
    if (i === undefined) return null;
    const s = this.cell;
    return { x: (i % this.cols) * s, y: Math.floor(i / this.cols) * s, size: s };
  }

  nodeAtEvent(e) {
    const r = this.canvas.getBoundingClientRect();
    const col = Math.floor((e.clientX - r.left) / this.cell);
    const row = Math.floor((e.clientY - r.top) / this.cell);
    if (col < 0 || col >= this.cols || row < 0) return null;
    const name = this.order[row * this.cols + col];
    return name ? this.nodes.get(name) : null;
  }

  _hover(e) {
    if (this.onHover) this.onHover(this.nodeAtEvent(e), e);
  }
}
