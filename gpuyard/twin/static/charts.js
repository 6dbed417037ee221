// The twin report's charts, drawn as SVG from the data beside each one (a
// <script type="application/json"> per chart), inlined in report.html so that the
// report works offline. Hover shows the nearest point's values, a legend button shows
// or hides its series, and dragging across a line chart zooms into that range of x
// (double-click or "Whole range" to zoom out). Each chart is also drawn as static
// SVG in the page (gpuyard/twin/svg.py: for readers without JavaScript), which is
// replaced here by the interactive drawing.
(() => {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const W = 640, H = 300, M = { l: 56, r: 14, t: 12, b: 40 };
  const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (parent) parent.appendChild(e);
    return e;
  }

  // A wait in the unit that reads best (as the report's tables say it).
  function duration(hours) {
    const s = hours * 3600;
    if (s === 0) return "0 s";
    if (s < 60) return `${s.toFixed(0)} s`;
    if (s < 3600) return `${(s / 60).toFixed(1)} min`;
    return `${hours.toFixed(1)} h`;
  }

  const FORMATS = {
    days: (v) => `${v.toFixed(2)} days`,
    hours: duration,
    pct: (v) => `${v.toFixed(1)}%`,
    share: (v) => `${(100 * v).toFixed(0)}%`,
    gpuh: (v) => `${v.toFixed(1)} GPU-h`,
    num: (v) => `${+v.toFixed(3)}`,
  };
  const fmt = (kind, v) => (FORMATS[kind] || FORMATS.num)(v);

  // x -> [0, 1] on a linear or symmetric-log axis (linear within +-linthresh)
  function scaler(axis) {
    if (axis.scale !== "symlog") return (v) => v;
    const c = axis.linthresh || 1;
    return (v) => Math.sign(v) * Math.log10(1 + Math.abs(v) / c);
  }

  function ticks(lo, hi, axis) {
    if (axis.scale === "symlog") {
      const out = [0];
      for (let p = Math.log10(axis.linthresh || 1); p <= Math.log10(Math.max(hi, 1e-9)) + 1e-9; p++) {
        const v = 10 ** p;
        if (v >= lo && v <= hi) out.push(+v.toPrecision(3));
      }
      return out.filter((v) => v >= lo && v <= hi);
    }
    const span = hi - lo || 1;
    const step0 = 10 ** Math.floor(Math.log10(span / 5));
    const step = [1, 2, 5, 10].map((k) => k * step0).find((s) => span / s <= 6);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(6));
    return out;
  }

  class Chart {
    constructor(root, spec) {
      this.root = root;
      this.spec = spec;
      this.hidden = new Set();
      this.domain = null; // the zoomed x range, or null for all of it
      for (const e of root.querySelectorAll(".static")) e.remove();
      root.classList.add("chart");
      const head = document.createElement("div");
      head.className = "legend";
      root.appendChild(head);
      spec.series.forEach((s, i) => {
        s.colour = COLOURS[i % COLOURS.length];
        const b = document.createElement("button");
        b.type = "button";
        b.className = "series";
        b.dataset.series = s.name;
        b.setAttribute("aria-pressed", "true");
        b.innerHTML = `<i style="background:${s.colour}"></i>`;
        b.appendChild(document.createTextNode(s.name));
        b.addEventListener("click", () => this.toggle(s.name));
        head.appendChild(b);
      });
      if (spec.kind === "line") {
        this.reset = document.createElement("button");
        this.reset.type = "button";
        this.reset.className = "reset";
        this.reset.textContent = "Whole range";
        this.reset.hidden = true;
        this.reset.addEventListener("click", () => this.zoom(null));
        head.appendChild(this.reset);
      }
      this.svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": spec.title }, root);
      this.tip = document.createElement("div");
      this.tip.className = "tip";
      this.tip.hidden = true;
      root.appendChild(this.tip);
      this.draw();
      this.listen();
    }

    toggle(name) {
      if (this.hidden.has(name)) this.hidden.delete(name);
      else this.hidden.add(name);
      const b = [...this.root.querySelectorAll("button.series")].find((x) => x.dataset.series === name);
      b.setAttribute("aria-pressed", String(!this.hidden.has(name)));
      this.draw();
    }

    zoom(domain) {
      this.domain = domain;
      if (this.reset) this.reset.hidden = domain === null;
      this.root.dataset.zoomed = domain === null ? "" : domain.map((v) => +v.toPrecision(6)).join(",");
      this.draw();
    }

    visible() {
      return this.spec.series.filter((s) => !this.hidden.has(s.name));
    }

    xRange() {
      if (this.domain) return this.domain;
      const xs = this.spec.series.flatMap((s) => s.points.map((p) => p[0]));
      const a = this.spec.x;
      return [a.min ?? Math.min(...xs), a.max ?? Math.max(...xs)];
    }

    draw() {
      const { svg, spec } = this;
      svg.replaceChildren();
      this.marks = []; // [px, py, series, point] of every drawn point, for hovering
      if (spec.kind === "bar") return this.drawBars();
      const [x0, x1] = this.xRange();
      const sx = scaler(spec.x), a = sx(x0), b = sx(x1) === a ? a + 1 : sx(x1);
      const px = (v) => M.l + ((sx(v) - a) / (b - a)) * (W - M.l - M.r);
      const inX = (p) => p[0] >= x0 && p[0] <= x1;
      const ys = this.visible().flatMap((s) => s.points.filter(inX).map((p) => p[1]));
      const y0 = spec.y.min ?? Math.min(0, ...ys), y1 = spec.y.max ?? Math.max(1e-9, ...ys) * 1.05;
      const py = (v) => H - M.b - ((v - y0) / (y1 - y0 || 1)) * (H - M.t - M.b);
      this.frame(ticks(x0, x1, spec.x).map((v) => [px(v), v]), ticks(y0, y1, {}).map((v) => [py(v), v]));
      const clip = `clip-${Math.random().toString(36).slice(2)}`;
      el("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b },
        el("clipPath", { id: clip }, el("defs", {}, svg)));
      const g = el("g", { "clip-path": `url(#${clip})` }, svg);
      for (const s of this.visible()) {
        let d = "";
        s.points.forEach((p, i) => {
          const X = px(p[0]).toFixed(1), Y = py(p[1]).toFixed(1);
          if (i === 0) d += `M${X},${Y}`;
          else d += s.step ? `H${X}V${Y}` : `L${X},${Y}`;
          if (inX(p)) this.marks.push([px(p[0]), py(p[1]), s, p]);
        });
        el("path", {
          d, fill: "none", stroke: s.colour, "stroke-width": 1.6,
          "stroke-dasharray": s.dash ? "5 3" : "none", "data-series": s.name,
        }, g);
      }
      this.brush = el("rect", { class: "brush", y: M.t, height: H - M.t - M.b, width: 0, visibility: "hidden" }, svg);
      this.dot = el("circle", { r: 4, class: "dot", visibility: "hidden" }, svg);
      this.px = px;
      this.py = py;
      this.unpx = (X) => {
        const t = a + ((X - M.l) / (W - M.l - M.r)) * (b - a);
        if (spec.x.scale !== "symlog") return t;
        const c = spec.x.linthresh || 1;
        return Math.sign(t) * c * (10 ** Math.abs(t) - 1);
      };
    }

    drawBars() {
      const { svg, spec } = this;
      const cats = spec.categories, shown = this.visible();
      const vals = shown.flatMap((s) => s.values);
      const y1 = Math.max(1e-9, ...vals) * 1.1;
      const py = (v) => H - M.b - (v / y1) * (H - M.t - M.b);
      const slot = (W - M.l - M.r) / cats.length, bw = (slot * 0.7) / Math.max(1, shown.length);
      this.frame(cats.map((c, i) => [M.l + slot * (i + 0.5), c]), ticks(0, y1, {}).map((v) => [py(v), v]), true);
      shown.forEach((s, j) => {
        s.values.forEach((v, i) => {
          const X = M.l + slot * i + slot * 0.15 + bw * j;
          el("rect", { x: X, y: py(v), width: bw, height: py(0) - py(v), fill: s.colour, "data-series": s.name }, svg);
          this.marks.push([X + bw / 2, py(v), s, [cats[i], v]]);
        });
      });
      this.dot = el("circle", { r: 4, class: "dot", visibility: "hidden" }, svg);
    }

    frame(xt, yt, categorical) {
      const { svg, spec } = this;
      const g = el("g", { class: "axes" }, svg);
      el("line", { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b }, g);
      el("line", { x1: M.l, x2: M.l, y1: M.t, y2: H - M.b }, g);
      for (const [X, v] of xt) {
        el("line", { x1: X, x2: X, y1: H - M.b, y2: H - M.b + 4 }, g);
        el("text", { x: X, y: H - M.b + 15, "text-anchor": "middle" }, g).textContent =
          categorical ? v : +v.toPrecision(4);
      }
      for (const [Y, v] of yt) {
        el("line", { x1: M.l, x2: W - M.r, y1: Y, y2: Y, class: "grid" }, g);
        el("text", { x: M.l - 5, y: Y + 4, "text-anchor": "end" }, g).textContent = +v.toPrecision(4);
      }
      el("text", { x: (M.l + W - M.r) / 2, y: H - 6, "text-anchor": "middle" }, g).textContent = spec.x.label;
      el("text", { x: 12, y: (M.t + H - M.b) / 2, transform: `rotate(-90 12 ${(M.t + H - M.b) / 2})`,
        "text-anchor": "middle" }, g).textContent = spec.y.label;
    }

    // where the pointer is, in the SVG's own units
    at(ev) {
      const r = this.svg.getBoundingClientRect();
      return [((ev.clientX - r.left) / r.width) * W, ((ev.clientY - r.top) / r.height) * H];
    }

    hover(ev) {
      const [X, Y] = this.at(ev);
      let best = null, bd = Infinity;
      for (const m of this.marks) {
        const d = (m[0] - X) ** 2 + (m[1] - Y) ** 2;
        if (d < bd) { bd = d; best = m; }
      }
      if (!best || bd > 40 ** 2) return this.unhover();
      const [mx, my, s, p] = best;
      // every series drawn through that same spot (policies that agree there)
      const here = this.marks.filter((m) => Math.abs(m[0] - mx) < 1 && Math.abs(m[1] - my) < 1);
      const names = [...new Set(here.map((m) => m[2].name))];
      this.dot.setAttribute("cx", mx);
      this.dot.setAttribute("cy", my);
      this.dot.setAttribute("fill", s.colour);
      this.dot.setAttribute("visibility", "visible");
      const xs = this.spec.kind === "bar" ? p[0] : fmt(this.spec.x.format, p[0]);
      this.tip.textContent = `${names.join(", ")}: ${fmt(this.spec.y.format, p[1])} at ${xs}`;
      this.tip.dataset.series = names.join("\n");
      this.tip.dataset.x = String(p[0]);
      this.tip.dataset.y = String(p[1]);
      this.tip.hidden = false;
      const r = this.svg.getBoundingClientRect(), k = r.width / W;
      this.tip.style.left = `${Math.min(mx * k + 10, r.width - 200)}px`;
      this.tip.style.top = `${this.svg.offsetTop + my * k - 30}px`;
    }

    unhover() {
      this.tip.hidden = true;
      this.dot.setAttribute("visibility", "hidden");
    }

    listen() {
      const svg = this.svg;
      let from = null;
      svg.addEventListener("mouseleave", () => { this.unhover(); from = null; });
      if (this.spec.kind !== "line") {
        svg.addEventListener("mousemove", (ev) => this.hover(ev));
        return;
      }
      svg.addEventListener("mousedown", (ev) => { from = this.at(ev)[0]; ev.preventDefault(); });
      svg.addEventListener("mousemove", (ev) => {
        this.hover(ev);
        if (from === null) return;
        const X = this.at(ev)[0];
        this.brush.setAttribute("x", Math.min(from, X));
        this.brush.setAttribute("width", Math.abs(X - from));
        this.brush.setAttribute("visibility", "visible");
      });
      svg.addEventListener("mouseup", (ev) => {
        if (from === null) return;
        const X = this.at(ev)[0], lo = Math.max(M.l, Math.min(from, X)), hi = Math.min(W - M.r, Math.max(from, X));
        from = null;
        if (hi - lo >= 5) this.zoom([this.unpx(lo), this.unpx(hi)]);
        else this.brush.setAttribute("visibility", "hidden");
      });
      svg.addEventListener("dblclick", () => this.zoom(null));
    }
  }

  const charts = [];
  for (const root of document.querySelectorAll("[data-chart]")) {
    const spec = JSON.parse(document.getElementById(root.dataset.chart).textContent);
    charts.push(new Chart(root, spec));
  }
  window.gpuyardCharts = charts;
})();
