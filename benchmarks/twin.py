"""Benchmark of the digital twin; prints JSON.

1. openb default pod list ×5 on the all-node list ×5 (target ≤ 30 s).
2. a synthetic 30-day, 100,000-job workload on 7,500 nodes (target ≤ 60 s, ≤ 2 GiB).
3. the same workload with teams and balloons (`gpuyard twin --teams --balloons`): five
   teams owning 5,000 of the nodes, a balloon on every idle node; 5 days, 17,000 jobs
   (no target: it shows what team capacity and warm capacity cost the replay).

Each case runs in its own process (peak RSS is per case) and reports wall seconds,
peak RSS, simulated days per wall second, scheduling passes, and whether it reached the
end; a case that passes its wall budget (--budget, default 300 s) is stopped and reports
how far it got in virtual time. `--quick`: ×1 openb and a 750-node, 3-day, 10,000-job
synthetic run, and 2 days, 3,000 jobs with teams and balloons. `--case` runs only the
named cases.

    python benchmarks/twin.py --baseline-commit REV [--rounds N] [--case synth_teams]

also runs each case on the code of commit REV (in a temporary git worktree), in turns
with this checkout, and prints the median wall seconds of the replay of both and their
ratio (this code / baseline; below 1 is faster), the same for the replay's CPU seconds
(steadier than wall time on a shared machine), and whether both made the same number
of scheduling passes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "alibaba-openb"


def teams_yaml(n: int) -> str:
    """Five teams owning two thirds of n nodes (capacity gpu: nodes of the gpu pool),
    the two largest may borrow."""
    teams = (
        ("language", 4 * n // 15, True),
        ("vision", 2 * n // 15, True),
        ("multimodal", 2 * n // 15, False),
        ("rl", n // 15, False),
        ("safety", n // 15, False),
    )
    return "---\n".join(
        "apiVersion: gpuyard.io/v1alpha1\nkind: Team\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{capacity: {{gpu: {count}}}, borrow: {str(borrow).lower()}}}\n"
        for name, count, borrow in teams
    )


class _Stop(Exception):
    pass


def _case(kind: str, scale: dict[str, Any], budget: float, q: Any) -> None:
    from gpuyard.cluster.shapes import default_shapes, expand, load_shapes
    from gpuyard.twin.engine import Engine
    from gpuyard.twin.synth import synth
    from gpuyard.twin.traces import load_trace

    t0 = time.perf_counter()
    if kind == "openb":
        k = scale["k"]
        shapes = expand(load_shapes(f"openb:{SHARED / 'openb_node_list_all_node.csv'}*{k}"))
        jobs = load_trace(f"openb:{SHARED / 'openb_pod_list_default.csv'}*{k}").jobs
    else:
        shapes = expand(default_shapes(scale["nodes"]))
        jobs = synth(scale["nodes"], scale["days"], scale["jobs"], seed=1)
    teams = None
    if kind == "synth_teams":
        import tempfile

        from gpuyard.twin.capacity import load_teams

        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "teams.yaml"
            f.write_text(teams_yaml(scale["nodes"]))
            teams = load_teams(f)
    t_load = time.perf_counter() - t0
    reached = [0.0]
    deadline = time.perf_counter() + budget

    def progress(t: float) -> None:
        reached[0] = t
        if time.perf_counter() > deadline:
            raise _Stop

    eng = Engine(shapes, jobs, "gpuyard", progress=progress, teams=teams, balloons=bool(teams))
    t1 = time.perf_counter()
    c1 = time.process_time()
    done = True
    try:
        eng.run()
    except _Stop:
        done = False
    wall = time.perf_counter() - t1
    cpu = time.process_time() - c1
    q.put(
        {
            "case": kind,
            **scale,
            "nodes_built": len(shapes),
            "jobs_loaded": len(jobs),
            "completed": done,
            "load_s": round(t_load, 2),
            "sim_wall_s": round(wall, 2),
            "sim_cpu_s": round(cpu, 2),
            "wall_s": round(t_load + wall, 2),
            "virtual_days_reached": round(reached[0] / 86400, 3),
            "sim_days_per_wall_s": round(reached[0] / 86400 / wall, 4) if wall else None,
            "scheduling_passes": eng.passes,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    )


def run_case(kind: str, scale: dict[str, Any], budget: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_case, args=(kind, scale, budget, q))
    p.start()
    try:
        res: dict[str, Any] = q.get(timeout=budget + 300)
    finally:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    return res


CASES = ("openb", "synth", "synth_teams")


def scales(quick: bool) -> dict[str, dict[str, Any]]:
    return {
        "openb": {"k": 1 if quick else 5},
        "synth": {"nodes": 750, "days": 3, "jobs": 10_000}
        if quick
        else {"nodes": 7500, "days": 30, "jobs": 100_000},
        "synth_teams": {"nodes": 750, "days": 2, "jobs": 3_000}
        if quick
        else {"nodes": 7500, "days": 5, "jobs": 17_000},
    }


def _one_run(code_dir: str, kind: str, scale: dict[str, Any], budget: float) -> dict[str, Any]:
    """One case on the code in `code_dir` (this script, that tree's gpuyard)."""
    env = {**os.environ, "PYTHONPATH": code_dir}
    got = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--one", kind]
        + ["--scale", json.dumps(scale), "--budget", str(budget)],
        env=env,
        capture_output=True,
        text=True,
        cwd=code_dir,
    )
    if got.returncode != 0:
        raise SystemExit(f"benchmarks/twin.py: {kind} in {code_dir} failed:\n{got.stderr}")
    return dict(json.loads(got.stdout))


def compare(rev: str, rounds: int, cases: list[str], quick: bool, budget: float) -> dict[str, Any]:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from benchmarks.baseline import baseline_tree

    sc = scales(quick)
    out: dict[str, Any] = {"rounds": rounds, "cases": {}}
    with baseline_tree(rev, "benchmarks/twin.py") as (commit, tree):
        out["baseline_commit"] = commit
        for kind in cases:
            runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
            for _ in range(rounds):
                runs["baseline"].append(_one_run(tree, kind, sc[kind], budget))
                runs["current"].append(_one_run(repo, kind, sc[kind], budget))
            figures = {}
            for fig in ("sim_wall_s", "sim_cpu_s"):
                b = statistics.median(r[fig] for r in runs["baseline"])
                c = statistics.median(r[fig] for r in runs["current"])
                figures[fig] = {
                    "baseline": b,
                    "current": c,
                    "ratio": round(c / b, 3),
                    "all_baseline": [r[fig] for r in runs["baseline"]],
                    "all_current": [r[fig] for r in runs["current"]],
                }
            out["cases"][kind] = {
                **sc[kind],
                **figures,
                "completed": all(r["completed"] for rs in runs.values() for r in rs),
                "same_passes": len({r["scheduling_passes"] for rs in runs.values() for r in rs})
                == 1,
                "scheduling_passes": {k: rs[0]["scheduling_passes"] for k, rs in runs.items()},
            }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--budget", type=float, default=300.0, help="wall seconds per case")
    ap.add_argument("--case", action="append", choices=CASES, help="only these cases")
    ap.add_argument(
        "--baseline-commit",
        metavar="REV",
        default=None,
        help="also run each case on the code of commit REV, in turns with this "
        "checkout, and print the ratios",
    )
    ap.add_argument("--rounds", type=int, default=1, help="runs of each side (with REV)")
    ap.add_argument("--one", choices=CASES, help=argparse.SUPPRESS)
    ap.add_argument("--scale", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from gpuyard import childgroups

    childgroups.exit_on_signals()  # a signal still stops every server it started
    if args.one:
        json.dump(run_case(args.one, json.loads(args.scale), args.budget), sys.stdout)
        return 0
    cases = args.case or list(CASES)
    if args.baseline_commit:
        if args.rounds < 1:
            raise SystemExit("benchmarks/twin.py: --rounds must be at least 1")
        if "openb" in cases and not SHARED.exists():
            cases.remove("openb")
        got = compare(args.baseline_commit, args.rounds, cases, args.quick, args.budget)
        json.dump(got, sys.stdout, indent=2)
        print()
        return 0
    sc = scales(args.quick)
    out: dict[str, Any] = {"cases": []}
    if "openb" in cases:
        if SHARED.exists():
            r = run_case("openb", sc["openb"], args.budget)
            r["target_wall_s"] = 30
            out["cases"].append(r)
        else:
            out["openb"] = f"skipped: {SHARED} missing"
    if "synth" in cases:
        r = run_case("synth", sc["synth"], args.budget)
        r["target_wall_s"], r["target_rss_mib"] = 60, 2048
        out["cases"].append(r)
    if "synth_teams" in cases:
        out["cases"].append(run_case("synth_teams", sc["synth_teams"], args.budget))
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
