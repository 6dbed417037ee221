"""Debian's chromium driven by playwright for the dashboard's browser tests and its
benchmark: never a downloaded browser. `chromium_or_skip()` says clearly why a test
cannot run where chromium or playwright is missing (`make install-test` installs both)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"Debian's chromium is not installed at {CHROMIUM} (make install-test installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@contextlib.contextmanager
def browser_page(
    width: int = 1400, height: int = 1000, *, javascript: bool = True
) -> Iterator[Any]:
    """A page in a fresh chromium profile; page errors are collected on `page.errors`.
    `javascript=False`: the page's scripts do not run (a reader who turned them off)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="gpuyard-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": width, "height": height},
            java_script_enabled=javascript,
        )
        try:
            page = ctx.new_page()
            page.errors = []
            page.on("pageerror", lambda e: page.errors.append(str(e)))
            yield page
        finally:
            ctx.close()


# The colour of a node's cell as drawn on the canvas: [r, g, b] at its centre.
PIXEL_JS = """(name) => {
  const m = window.gpuyard.map, c = m.cellOf(name);
  if (!c) return null;
  const dpr = window.devicePixelRatio || 1;
  const px = m.ctx.getImageData(Math.floor((c.x + c.size / 2 - 1) * dpr), Math.floor((c.y + c.size / 2 - 1) * dpr), 1, 1).data;
  return [px[0], px[1], px[2]];
}"""

# How many nodes' cells are painted in a colour other than the background.
PAINTED_JS = """() => {
  const m = window.gpuyard.map, dpr = window.devicePixelRatio || 1;
  const img = m.ctx.getImageData(0, 0, m.canvas.width, m.canvas.height);
  let painted = 0;
  for (const name of m.order) {
    const c = m.cellOf(name);
    const x = Math.floor((c.x + c.size / 2 - 1) * dpr), y = Math.floor((c.y + c.size / 2 - 1) * dpr);
    const i = (y * img.width + x) * 4;
    if (!(img.data[i] === 11 && img.data[i + 1] === 14 && img.data[i + 2] === 18)) painted += 1;
  }
  return painted;
}"""

RED = (229, 57, 53)  # "unhealthy" in map.js


def is_red(rgb: list[int] | None) -> bool:
    return rgb is not None and all(abs(a - b) <= 8 for a, b in zip(rgb, RED, strict=True))
