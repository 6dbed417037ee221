"""The dashboard page at scale, in Debian's chromium (playwright, a fresh profile):

- first_paint_ms: from navigation (the banner's sign-in link) until the canvas has drawn
  every node of a `gpuyard up --nodes N --components none` cluster (sign-in, the
  snapshot over server-sent events, layout, drawing), its parts, and the share after
  the page's own files loaded; full_draw_ms: the draw alone; baseline:
  snapshot_fetch_ms, one plain GET of /api/snapshot in the same run, and
  after_page_load_over_fetch, what the page adds to fetching the rows. Measured
  --rounds times, each time in a fresh browser twice: with the event stream gzipped (as
  a browser asks for it) and plain (the browser made to send Accept-Encoding: identity,
  the baseline); medians, and gzip over plain. --link MBIT/RTT_MS throttles the
  browser's network (Chrome's own emulation: bytes on the wire, both ways) to show what
  the stream's size costs beyond loopback; sign-in (one round trip) beside
  healthz_round_trip_median_ms, what any request to the process waits;
- update latency at --rate node changes per second for --seconds (each change cordons a
  distinct node through the API): from the PATCH's answer until the browser painted that
  node's cell (p50, p95, max), beside the same changes seen by a plain event-stream
  reader in this process (the baseline: what the wire and the server's batching cost),
  and their ratio;
  --timeline FILE writes each change's wall-clock times (answered, seen on the stream,
  drawn) to line them up with timestamps taken inside the process;
- browser CPU over the update window: the renderer main thread's busy share
  (Chrome's TaskDuration per second of wall time) and script share (ScriptDuration).

    python benchmarks/dashboard.py                   # 7,500 nodes, 100 changes/s, 10 s
    python benchmarks/dashboard.py --nodes 1000 --seconds 5
    python benchmarks/dashboard.py --link 20/40    # 20 Mbit/s, 40 ms round trips

Prints JSON. Targets at 7,500 nodes: first paint under 3 s, update p95 under 1 s, the
main thread under half busy at 100 changes/s. The machine is shared and the cluster
runs on it too, so figures are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpuyard.cluster.testing import run_cluster_process, wait_for  # noqa: E402
from tests.dashboard import browser  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def summary(xs: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(xs), 1) if xs else float("nan"),
        "p95": round(pct(xs, 0.95), 1),
        "max": round(max(xs), 1) if xs else float("nan"),
        "seen": len(xs),
    }


MARKS_JS = """() => {
  const at = (n) => (performance.getEntriesByName(n)[0] || {startTime: NaN}).startTime;
  const nav = performance.getEntriesByType("navigation")[0];
  return {
    first: window.gpuyard.map.firstPaintMs, draw: window.gpuyard.map.fullDrawMs,
    domContentLoaded: nav ? nav.domContentLoadedEventEnd : NaN,
    signedIn: at("gpuyard-signed-in"), snapshotReceived: at("gpuyard-snapshot-received"),
    snapshotParsed: at("gpuyard-snapshot"),
  };
}"""


class StreamReader(threading.Thread):
    """A plain event-stream reader: when each node was first seen cordoned (ms)."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        self.stream = urllib.request.urlopen(req, timeout=120)
        self.seen: dict[str, float] = {}
        self.stop = False

    def run(self) -> None:
        pat = re.compile(rb'"([^"]+)":\{"name":"[^"]+","state":"cordoned"')
        while not self.stop:
            line = self.stream.readline()
            if not line:
                return
            if line.startswith(b"data:"):
                now = time.time() * 1000
                for m in pat.finditer(line):
                    self.seen.setdefault(m.group(1).decode(), now)


async def change_nodes(kubeconfig: str, names: list[str], rate: float) -> dict[str, float]:
    """Cordon each node in turn at `rate` per second; name -> ms (wall clock) when the
    API server answered."""
    from gpuyard.kube.client import Client
    from gpuyard.kube.resources import NODES

    done: dict[str, float] = {}

    async def one(c: Any, name: str) -> None:
        await c.patch(NODES, name, {"spec": {"unschedulable": True}})
        done[name] = time.time() * 1000

    async with Client.from_kubeconfig(kubeconfig, component="bench") as c:
        t0 = time.monotonic()
        tasks = []
        for i, name in enumerate(names):  # on schedule, not waiting for the last answer
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(c, name)))
        await asyncio.gather(*tasks)
    return done


def first_paint(
    page: Any, url: str, nodes: int, *, plain: bool, link: tuple[float, float] | None
) -> dict[str, Any]:
    """Open the page in `page` (a fresh profile) and time its first paint."""
    encodings: list[str] = []
    page.on(
        "response",
        lambda r: (
            encodings.append(r.headers.get("content-encoding") or "identity")
            if "/api/events" in r.url
            else None
        ),
    )
    if plain:  # the baseline: the stream as it was before it was gzipped
        page.set_extra_http_headers({"Accept-Encoding": "identity"})
    if link is not None:
        mbit, rtt = link
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": rtt,
                "downloadThroughput": mbit * 1e6 / 8,
                "uploadThroughput": mbit * 1e6 / 8,
            },
        )
    page.goto(url)
    wait_for(
        lambda: page.evaluate("document.getElementById('map').dataset.nodeCount") == str(nodes),
        120,
        "the map to draw every node",
        every=0.05,
    )
    timing = page.evaluate(MARKS_JS)
    timing["encoding"] = encodings[0] if encodings else "?"
    return timing


def _median(rounds: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in rounds), 1)


def run(
    nodes: int,
    rate: float,
    seconds: float,
    rounds: int,
    link: tuple[float, float] | None,
    timeline: str | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gpuyard-bench-dash-") as d:
        args = ["--components", "none", "--in-memory"]
        with run_cluster_process(Path(d) / "c", nodes=nodes, args=args, timeout=600) as c:
            state = json.loads((c.data_dir / "up.json").read_text())
            base = state["dashboard"]
            token = re.search(r"token: (\S+)", Path(c.kubeconfig).read_text()).group(1)  # type: ignore[union-attr]
            t0 = time.perf_counter()
            req = urllib.request.Request(
                base + "api/snapshot", headers={"Authorization": f"Bearer {token}"}
            )
            snap = json.loads(urllib.request.urlopen(req, timeout=60).read())
            fetch_ms = (time.perf_counter() - t0) * 1000
            assert len(snap["nodes"]) == nodes
            out: dict[str, Any] = {"nodes": nodes, "snapshot_fetch_ms": round(fetch_ms, 1)}
            # what any request waits for in this process (its event loop's delay): the
            # baseline of sign-in, which is one such round trip
            rtts = []
            for _ in range(5):
                t0 = time.perf_counter()
                urllib.request.urlopen(base + "healthz", timeout=60).read()
                rtts.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.2)
            out["healthz_round_trip_median_ms"] = round(statistics.median(rtts), 1)
            if link is not None:
                out["link"] = {"mbit_per_s": link[0], "rtt_ms": link[1]}
            url = f"{base}#token={token}"
            by: dict[str, list[dict[str, Any]]] = {"gzip": [], "plain": []}
            for _ in range(rounds):
                for kind in ("plain", "gzip"):
                    with browser.browser_page() as pg:
                        by[kind].append(
                            first_paint(pg, url, nodes, plain=kind == "plain", link=link)
                        )
            for kind, rs in by.items():
                out[f"first_paint_{kind}"] = {
                    "median_ms": _median(rs, "first"),
                    "runs_ms": [round(r["first"], 1) for r in rs],
                    "stream_encoding": sorted({r["encoding"] for r in rs}),
                    # where first paint went: the page's modules loaded, signed in, the
                    # snapshot's bytes arrived, parsed; then layout and drawing
                    "parts_median_ms": {
                        k: _median(rs, k)
                        for k in (
                            "domContentLoaded",
                            "signedIn",
                            "snapshotReceived",
                            "snapshotParsed",
                        )
                    },
                    "sign_in_median_ms": round(
                        statistics.median(r["signedIn"] - r["domContentLoaded"] for r in rs), 1
                    ),
                    # from signed in until the stream's snapshot was in: its bytes
                    "snapshot_over_stream_median_ms": round(
                        statistics.median(r["snapshotReceived"] - r["signedIn"] for r in rs), 1
                    ),
                }
            out["first_paint_gzip_over_plain"] = round(
                out["first_paint_gzip"]["median_ms"] / out["first_paint_plain"]["median_ms"], 2
            )
            with browser.browser_page() as page:
                timing = first_paint(page, url, nodes, plain=False, link=None)
                out["first_paint_ms"] = round(timing["first"], 1)
                out["full_draw_ms"] = round(timing["draw"], 1)
                after_load = timing["first"] - timing["domContentLoaded"]
                out["first_paint_after_page_load_ms"] = round(after_load, 1)
                out["after_page_load_over_fetch"] = round(after_load / fetch_ms, 2)
                time.sleep(1.0)

                reader = StreamReader(base + "api/events", token)
                reader.start()
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")
                names = [n["name"] for n in snap["nodes"]][: int(rate * seconds)]
                before = _metrics(cdp)
                w0 = time.monotonic()
                done = in_thread(lambda: asyncio.run(change_nodes(c.kubeconfig, names, rate)))
                wait_for(
                    lambda: all(
                        page.evaluate("(n) => window.gpuyard.map.nodes.get(n).state", n)
                        == "cordoned"
                        for n in names[-5:]
                    ),
                    30,
                    "the last changes to reach the page",
                )
                time.sleep(0.5)
                after = _metrics(cdp)
                wall = time.monotonic() - w0
                drawn = page.evaluate(
                    "(ns) => ns.map((n) => [n, window.gpuyard.map.drawnAt.get(n) || null])", names
                )
                reader.stop = True
                page_lat = [t - done[n] for n, t in drawn if t is not None and t >= done[n] - 50]
                wire_lat = [reader.seen[n] - done[n] for n in names if n in reader.seen]
                out["changes"] = len(names)
                out["rate_per_s"] = rate
                out["achieved_rate_per_s"] = round(
                    len(names) / (max(done.values()) / 1000 - min(done.values()) / 1000 or 1), 1
                )
                if timeline:  # each change's times (wall clock ms), to line up with others
                    at = dict(drawn)
                    Path(timeline).write_text(
                        json.dumps(
                            {
                                n: {
                                    "written": done[n],
                                    "stream": reader.seen.get(n),
                                    "drawn": at[n],
                                }
                                for n in names
                            }
                        )
                    )
                out["update_latency_ms"] = summary(page_lat)
                out["baseline_stream_latency_ms"] = summary(wire_lat)
                if page_lat and wire_lat:
                    out["latency_over_stream_p50"] = round(
                        statistics.median(page_lat) / max(1.0, statistics.median(wire_lat)), 2
                    )
                out["browser_main_thread_busy"] = round(
                    (after["TaskDuration"] - before["TaskDuration"]) / wall, 3
                )
                out["browser_script_share"] = round(
                    (after["ScriptDuration"] - before["ScriptDuration"]) / wall, 3
                )
                out["js_heap_mib"] = round(after["JSHeapUsedSize"] / 2**20, 1)
                out["page_errors"] = page.errors
    return out


def in_thread(fn: Any) -> Any:
    """Run fn in a thread of its own (playwright's sync API holds this one's loop)."""
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join()
    if not box:
        raise RuntimeError("the node changes failed (see the traceback above)")
    return box[0]


def _metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=7500)
    p.add_argument("--rate", type=float, default=100.0, help="node changes per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3, help="first paints of each kind")
    p.add_argument("--link", help="throttle the browser: MBIT/RTT_MS, such as 20/40")
    p.add_argument(
        "--timeline",
        metavar="FILE",
        help="write each change's times (written, seen on the stream, drawn; wall-clock ms)",
    )
    args = p.parse_args()
    link = None
    if args.link:
        try:
            mbit, rtt = (float(x) for x in args.link.split("/"))
        except ValueError:
            p.error(f"--link {args.link!r}: want MBIT/RTT_MS, such as 20/40")
        if mbit <= 0 or rtt < 0:
            p.error(f"--link {args.link!r}: the rate must be above 0, the round trip 0 or more")
        link = (mbit, rtt)
    why = browser.missing()
    if why:
        print(json.dumps({"skipped": why}))
        return 0
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    print(
        json.dumps(
            run(args.nodes, args.rate, args.seconds, args.rounds, link, args.timeline), indent=1
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
