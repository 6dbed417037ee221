"""The twin report's charts as static SVG, drawn here from the same data the page's
script draws them from (see gpuyard/twin/static/charts.js: the same size, margins,
scales, ticks and colours), so a report read without JavaScript (a mail client, a
print, a locked-down browser) shows every chart. The script replaces each drawing
with its interactive one.

`chart_svg(spec, uid)` is one chart's `<svg>` and a plain legend; `uid` keeps its
clip path's id unique in the page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

W, H = 640, 300
ML, MR, MT, MB = 56, 14, 12, 40
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]  # fmt: skip


def _num(v: float) -> str:
    """A tick's label: 4 significant digits, no trailing zeros (as the script writes)."""
    r = float(f"{v:.4g}")
    if r == int(r) and abs(r) < 1e15:
        return str(int(r))
    return repr(r)


def _f(v: float) -> str:
    return f"{v:.1f}"


def _scaler(axis: dict[str, Any]) -> Callable[[float], float]:
    """x -> position on a linear or symmetric-log axis (linear within +-linthresh)."""
    if axis.get("scale") != "symlog":
        return lambda v: v
    c = axis.get("linthresh") or 1

    def sym(v: float) -> float:
        return math.copysign(math.log10(1 + abs(v) / c), v)

    return sym


def _ticks(lo: float, hi: float, axis: dict[str, Any]) -> list[float]:
    if axis.get("scale") == "symlog":
        out = [0.0]
        p = math.log10(axis.get("linthresh") or 1)
        while p <= math.log10(max(hi, 1e-9)) + 1e-9:
            v = float(f"{10**p:.3g}")
            if lo <= v <= hi:
                out.append(v)
            p += 1
        return [v for v in out if lo <= v <= hi]
    span = hi - lo or 1
    step0 = 10 ** math.floor(math.log10(span / 5))
    step = next(k * step0 for k in (1, 2, 5, 10) if span / (k * step0) <= 6)
    out = []
    v = math.ceil(lo / step) * step
    while v <= hi + step * 1e-9:
        out.append(float(f"{v:.6g}"))
        v += step
    return out


def _text(x: float, y: float, s: str, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}"{extra}>{html.escape(s)}</text>'


def _frame(spec: dict[str, Any], xt: list[tuple[float, str]], yt: list[tuple[float, float]]) -> str:
    out = ['<g class="axes">']
    out.append(f'<line x1="{ML}" x2="{W - MR}" y1="{H - MB}" y2="{H - MB}"/>')
    out.append(f'<line x1="{ML}" x2="{ML}" y1="{MT}" y2="{H - MB}"/>')
    for x, label in xt:
        out.append(f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{H - MB}" y2="{H - MB + 4}"/>')
        out.append(_text(x, H - MB + 15, label))
    for y, v in yt:
        out.append(f'<line class="grid" x1="{ML}" x2="{W - MR}" y1="{_f(y)}" y2="{_f(y)}"/>')
        out.append(_text(ML - 5, y + 4, _num(v), "end"))
    out.append(_text((ML + W - MR) / 2, H - 6, str(spec["x"].get("label", ""))))
    mid = (MT + H - MB) / 2
    out.append(
        _text(12, mid, str(spec["y"].get("label", "")), extra=f' transform="rotate(-90 12 {mid})"')
    )
    out.append("</g>")
    return "".join(out)


def _line_chart(spec: dict[str, Any], uid: str) -> str:
    series = spec["series"]
    xa, ya = spec["x"], spec["y"]
    xs = [p[0] for s in series for p in s["points"]]
    x0 = xa["min"] if xa.get("min") is not None else min(xs)
    x1 = xa["max"] if xa.get("max") is not None else max(xs)
    sx = _scaler(xa)
    a = sx(x0)
    b = a + 1 if sx(x1) == a else sx(x1)

    def px(v: float) -> float:
        return ML + (sx(v) - a) / (b - a) * (W - ML - MR)

    ys = [p[1] for s in series for p in s["points"] if x0 <= p[0] <= x1]
    y0 = ya["min"] if ya.get("min") is not None else min([0.0, *ys])
    y1 = ya["max"] if ya.get("max") is not None else max([1e-9, *ys]) * 1.05

    def py(v: float) -> float:
        return H - MB - (v - y0) / ((y1 - y0) or 1) * (H - MT - MB)

    out = [
        _frame(
            spec,
            [(px(v), _num(v)) for v in _ticks(x0, x1, xa)],
            [(py(v), v) for v in _ticks(y0, y1, {})],
        )
    ]
    clip = f"clip-{uid}"
    out.append(
        f'<defs><clipPath id="{clip}"><rect x="{ML}" y="{MT}" width="{W - ML - MR}" '
        f'height="{H - MT - MB}"/></clipPath></defs><g clip-path="url(#{clip})">'
    )
    for i, s in enumerate(series):
        d = []
        for k, (x, y) in enumerate(s["points"]):
            X, Y = _f(px(x)), _f(py(y))
            d.append(f"M{X},{Y}" if k == 0 else (f"H{X}V{Y}" if s.get("step") else f"L{X},{Y}"))
        dash = ' stroke-dasharray="5 3"' if s.get("dash") else ""
        out.append(
            f'<path d="{"".join(d)}" fill="none" stroke="{COLOURS[i % len(COLOURS)]}" '
            f'stroke-width="1.6"{dash}><title>{html.escape(s["name"])}</title></path>'
        )
    out.append("</g>")
    return "".join(out)


def _bar_chart(spec: dict[str, Any]) -> str:
    cats = spec["categories"]
    series = spec["series"]
    y1 = max([1e-9, *(v for s in series for v in s["values"])]) * 1.1

    def py(v: float) -> float:
        return H - MB - v / y1 * (H - MT - MB)

    slot = (W - ML - MR) / len(cats)
    bw = slot * 0.7 / max(1, len(series))
    out = [
        _frame(
            spec,
            [(ML + slot * (i + 0.5), str(c)) for i, c in enumerate(cats)],
            [(py(v), v) for v in _ticks(0, y1, {})],
        )
    ]
    for j, s in enumerate(series):
        for i, v in enumerate(s["values"]):
            x = ML + slot * i + slot * 0.15 + bw * j
            tip = html.escape(f"{s['name']}, {cats[i]}: {_num(v)}")
            out.append(
                f'<rect x="{_f(x)}" y="{_f(py(v))}" width="{_f(bw)}" '
                f'height="{_f(py(0) - py(v))}" fill="{COLOURS[j % len(COLOURS)]}">'
                f"<title>{tip}</title></rect>"
            )
    return "".join(out)


def chart_svg(spec: dict[str, Any], uid: str) -> str:
    """One chart as a plain legend and an `<svg>` (class "static": the page's script
    takes them away when it draws its own)."""
    legend = "".join(
        f'<span><i style="background:{COLOURS[i % len(COLOURS)]}"></i>'
        f"{html.escape(s['name'])}</span> "
        for i, s in enumerate(spec["series"])
    )
    body = _bar_chart(spec) if spec.get("kind") == "bar" else _line_chart(spec, uid)
    title = html.escape(spec["title"])
    return (
        f"<div class='legend static'>{legend}</div>"
        f'<svg class="static" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" '
        f'role="img" aria-label="{title}"><title>{title}</title>{body}</svg>'
    )
