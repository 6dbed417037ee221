"""`gpuyard network top`: pods', namespaces' or teams' traffic, like `kubectl top`.

Reads gpuyard_pod_network_bytes_total from node agents' /metrics (or, in `gpuyard up`, the
cluster's metrics address, found in up.json next to $KUBECONFIG) twice, --window apart:
rates in bits per second, internet and in-cluster (node, zone, cluster) apart, and the
bytes sent so far. Pods that have no counters of their own (hostNetwork pods share the
node's address) are named apart: "unaccounted" in JSON, a note on stderr in the table.
A node agent's /metrics on a real cluster answers only a token whose user may get /metrics:
with --metrics-url, the kubeconfig's user's token is sent (its exec plugin run if it has
one); gpuyard up's own address asks none and gets none.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

from gpuyard.cliargs import SECONDS, CommandError

BY = ("pod", "namespace", "team")
SORTS = ("internet", "cluster", "in", "sent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="network_cmd", metavar="SUBCOMMAND", required=True)
    t = sub.add_parser("top", help="traffic per pod, namespace or team")
    t.add_argument("--kubeconfig", default=None)
    t.add_argument(
        "--metrics-url",
        action="append",
        default=None,
        help="a node agent's /metrics (repeatable; default: the gpuyard up cluster's)",
    )
    t.add_argument("-n", "--namespace", default=None, help="only this namespace")
    t.add_argument("-A", "--all-namespaces", action="store_true")
    t.add_argument("--by", choices=BY, default="pod", help="one row per pod, namespace or team")
    t.add_argument("--sort-by", choices=SORTS, default="internet", help="largest first")
    t.add_argument("-o", "--output", choices=("table", "json"), default="table")
    t.add_argument("--window", type=SECONDS, default=2.0, help="seconds between the two reads")


def _urls(args: argparse.Namespace) -> list[str]:
    if args.metrics_url:
        return list(args.metrics_url)
    kc = args.kubeconfig or os.environ.get("KUBECONFIG") or ".gpuyard/kubeconfig"
    state = Path(kc).parent / "up.json"
    try:
        url = json.loads(state.read_text()).get("metrics") or ""
    except (OSError, ValueError):
        url = ""
    if not url:
        raise CommandError(
            f"no metrics address: {state} names none "
            "(is gpuyard up running?); pass --metrics-url of the node agents"
        )
    return [url]


def _token(args: argparse.Namespace) -> str | None:
    """The bearer token for node agents' /metrics: the kubeconfig's user's, if it has one."""
    if not args.metrics_url:
        return None  # gpuyard up's metrics address: local, asks for none
    import asyncio

    from gpuyard.kube.errors import ConfigError
    from gpuyard.kube.kubeconfig import load_config

    try:
        cfg = load_config(args.kubeconfig)
        if cfg.exec_plugin is not None:
            asyncio.run(cfg.refresh())
        return cfg.bearer_token()
    except (ConfigError, OSError) as exc:
        raise CommandError(f"kubeconfig: {exc}", 1) from None


def _read(
    urls: list[str], unaccounted: list[dict[str, str]] | None = None, token: str | None = None
) -> dict[tuple[str, str, str], dict[str, float]]:
    """Bytes per (namespace, pod, team); the pods counted by none of them (hostNetwork pods:
    the node's address is theirs) go into ``unaccounted`` if given."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for url in urls:
        req = urllib.request.Request(url)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            text = urllib.request.urlopen(req, timeout=10).read().decode()
        except urllib.error.HTTPError as exc:
            why = exc.read().decode(errors="replace").strip().splitlines()[:1]
            hint = ""
            if exc.code in (401, 403):
                hint = (
                    "; the node agents' /metrics need a token whose user may get /metrics: "
                    "bind the ClusterRole gpuyard-metrics-reader to your user"
                    + ("" if token else " (your kubeconfig's user has no token)")
                )
            raise CommandError(
                f"cannot read {url}: HTTP {exc.code} {' '.join(why)}{hint}", 1
            ) from None
        except OSError as exc:
            raise CommandError(f"cannot read {url}: {exc}", 1) from None
        for fam in text_string_to_metric_families(text):
            if fam.name == "gpuyard_pod_network_unaccounted" and unaccounted is not None:
                unaccounted += [dict(s.labels) for s in fam.samples if s.value]
            if fam.name != "gpuyard_pod_network_bytes":
                continue
            for s in fam.samples:
                if not s.name.endswith("_total"):
                    continue
                lab = s.labels
                key = (lab["namespace"], lab["pod"], lab.get("team", ""))
                col = (
                    "in"
                    if lab["direction"] == "in"
                    else ("internet" if lab["class"] == "internet" else "cluster")
                )
                out[key][col] += s.value
    return out


def rows(
    args: argparse.Namespace, unaccounted: list[dict[str, str]] | None = None
) -> list[dict[str, object]]:
    urls = _urls(args)
    token = _token(args)
    a = _read(urls, token=token)
    time.sleep(args.window)
    found: list[dict[str, str]] = []
    b = _read(urls, found, token)
    ns = None if args.all_namespaces else (args.namespace or "default")
    if unaccounted is not None:
        unaccounted += sorted(
            (u for u in found if ns is None or u.get("namespace") == ns),
            key=lambda u: (u.get("namespace", ""), u.get("pod", "")),
        )
    groups: dict[tuple[str, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for key, now in b.items():
        namespace, pod, team = key
        if ns is not None and namespace != ns:
            continue
        before = a.get(key, {})
        g = {"pod": (namespace, pod, team), "namespace": (namespace,), "team": (team,)}[args.by]
        for col in ("internet", "cluster", "in"):
            groups[g][col] += max(0.0, now.get(col, 0.0) - before.get(col, 0.0)) * 8 / args.window
        groups[g]["sent"] += now.get("internet", 0.0) + now.get("cluster", 0.0)
    out = []
    for g, v in groups.items():
        row: dict[str, object] = dict(
            zip(
                {
                    "pod": ("namespace", "pod", "team"),
                    "namespace": ("namespace",),
                    "team": ("team",),
                }[args.by],
                g,
                strict=True,
            )
        )
        row.update(
            internetBitsPerSecond=round(v["internet"]),
            clusterBitsPerSecond=round(v["cluster"]),
            inBitsPerSecond=round(v["in"]),
            sentBytes=int(v["sent"]),
        )
        out.append(row)
    field = {
        "internet": "internetBitsPerSecond",
        "cluster": "clusterBitsPerSecond",
        "in": "inBitsPerSecond",
        "sent": "sentBytes",
    }[args.sort_by]

    def order(r: dict[str, object]) -> tuple[int, list[str]]:
        return -int(str(r[field])), [v for v in r.values() if isinstance(v, str)]

    out.sort(key=order)
    return out


def _bits(n: object) -> str:
    v = float(str(n))
    for unit, f in (("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if v >= f:
            return f"{v / f:.1f}{unit}"
    return f"{v:.0f}bit"


def _bytes(n: object) -> str:
    v = float(str(n))
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= f:
            return f"{v / f:.1f}{unit}"
    return f"{v:.0f}B"


def _note(unaccounted: list[dict[str, str]]) -> None:
    if unaccounted:
        names = ", ".join(f"{u.get('namespace', '')}/{u.get('pod', '')}" for u in unaccounted)
        print(
            f"Not counted per pod (hostNetwork: they share the node's address, so their "
            f"traffic is the node's): {names}",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    unaccounted: list[dict[str, str]] = []
    got = rows(args, unaccounted)
    if args.output == "json":
        doc = {"by": args.by, "windowSeconds": args.window, "items": got}
        doc["unaccounted"] = unaccounted
        print(json.dumps(doc, indent=1))
        return 0
    _note(unaccounted)
    if not got:
        print(
            "No traffic counted"
            + ("" if args.all_namespaces else f" in namespace {args.namespace or 'default'}"),
            file=sys.stderr,
        )
        return 0
    names = [k for k in got[0] if isinstance(got[0][k], str)]
    head = [n.upper() for n in names] + ["INTERNET-OUT", "CLUSTER-OUT", "IN", "SENT"]
    table = [head] + [
        [str(r[n]) or "-" for n in names]
        + [
            _bits(r["internetBitsPerSecond"]),
            _bits(r["clusterBitsPerSecond"]),
            _bits(r["inBitsPerSecond"]),
            _bytes(r["sentBytes"]),
        ]
        for r in got
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0
