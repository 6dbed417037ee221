"""`gpuyard twin`: replay a workload through the scheduling policy in virtual time.

    gpuyard twin --cluster openb:nodes.csv --trace openb:pods.csv --out DIR [--compare]
    gpuyard twin synth --nodes 7500 --days 30 --jobs 100000 --seed 1 --out jobs.jsonl|.csv
    gpuyard twin bench [--size small] [--scenario NAME ...] [--openb DIR] [--out FILE]

Inputs are read and checked in full before anything is simulated; a malformed line,
or a job that could never run on the cluster, exits 2 with one line, "gpuyard: error:
FILE:LINE: FIELD: what is wrong".
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC
from pathlib import Path
from typing import Any

from gpuyard.cliargs import NATURAL, CommandError, Float, Int
from gpuyard.cluster.shapes import expand, load_shapes
from gpuyard.twin.traces import MAX_JOBS, MAX_SECONDS, load_trace, write_trace


def _duration(text: str) -> float:
    """argparse's type= for a duration written by people (30m, 1h, 0s)."""
    from gpuyard.k8s.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser, name: str = "twin") -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=["run", "synth", "bench"],
        default="run",
        help="run: replay --trace on --cluster (the default); synth: write a synthetic "
        "workload to --out; bench: the workload suite through every policy, as JSON",
    )
    parser.add_argument(
        "--cluster", help="node shapes YAML[*K], openb:PATH[*K], or nodes:N (8-GPU nodes)"
    )
    parser.add_argument("--trace", help="openb:PATH[*K], or a gpuyard CSV / JSON-lines file")
    parser.add_argument("--out", help="output folder (run) or file (synth)")
    parser.add_argument(
        "--policy",
        default="gpuyard",
        choices=["gpuyard", "gangs", "fifo"],
        help="gpuyard: the live scheduler's (gangs, holds for the first gang that waits, "
        "preemption); gangs: all-or-nothing gangs with preemption, no holds; fifo: pod by "
        "pod, no holds or preemption (default gpuyard)",
    )
    parser.add_argument(
        "--compare", action="store_true", help="run fifo, gangs, gpuyard side by side"
    )
    parser.add_argument("--failures", help='e.g. "mtbf=30d,xid=0.1,repair=4h,preflight=20m"')
    parser.add_argument(
        "--seed", type=NATURAL, default=0, help="random seed of failures and synth (default 0)"
    )
    parser.add_argument(
        "--batch",
        type=Float(lo=0, hi=MAX_SECONDS, what="a number of seconds", note="0: at every change"),
        default=0.0,
        help="run the policy on ticks of this many virtual seconds (0: at every change)",
    )
    parser.add_argument(
        "--teams",
        metavar="FILE",
        help="Team objects (YAML): carve team nodes and admit pods as the live system does",
    )
    parser.add_argument(
        "--balloons", action="store_true", help="a balloon pod on every idle node, as live"
    )
    parser.add_argument(
        "--skip-never-fitting",
        action="store_true",
        help="replay without the jobs that could never run on the cluster (counted in the "
        "report) instead of refusing the trace",
    )
    parser.add_argument(
        "--require-topology",
        metavar="LEVEL",
        help="every gang must fit inside one domain of this node label (say "
        "nvidia.com/gpu.clique, gpuyard.io/rack, gpuyard.io/block) or waits: what if our "
        "gangs must fit one NVLink domain?",
    )
    parser.add_argument(
        "--prefer-topology",
        metavar="LEVEL",
        help="every gang spans as few domains of this node label as it can",
    )
    parser.add_argument(
        "--checkpoint-interval",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="jobs whose trace gives no checkpoint interval checkpoint this often (say "
        "30m; default 0: they do not, and a restart loses all their work)",
    )
    parser.add_argument(
        "--victims",
        choices=["checkpoint", "plain"],
        default="checkpoint",
        help="checkpoint: each job's first pod says when it last checkpointed, as a "
        "trainer writing gpuyard.io/last-checkpoint does, and preemption takes the victims "
        "that lose the least work first (the live scheduler's choice); plain: no pod says "
        "(default checkpoint)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--size",
        choices=["small", "default"],
        default="default",
        help="bench: small scenarios (seconds) or the default ones (minutes)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="bench: run only this scenario (repeatable)",
    )
    parser.add_argument(
        "--openb", metavar="DIR", help="bench: the openb trace folder, for the openb scenario"
    )
    parser.add_argument(
        "--nodes",
        type=Int(1, 100_000),
        default=7500,
        help="synth: nodes of the cluster it is sized for (default 7500)",
    )
    parser.add_argument(
        "--days",
        type=Float(gt=0, hi=3650, what="a number of days"),
        default=30,
        help="synth: days of submissions (default 30)",
    )
    parser.add_argument(
        "--jobs",
        type=Int(1, MAX_JOBS),
        default=100_000,
        help="synth: number of jobs (default 100000)",
    )


def run(args: argparse.Namespace) -> int:
    if args.action == "synth":
        from gpuyard.twin.synth import synth

        if not args.out:
            raise CommandError("twin synth: --out FILE is required")
        try:
            with _status(args, f"synthesising {args.jobs:,} jobs"):
                jobs = synth(args.nodes, args.days, args.jobs, args.seed)
        except ValueError as exc:
            raise CommandError(f"twin synth: {exc}") from None
        try:
            with _status(args, f"writing {len(jobs):,} jobs to {args.out}"):
                write_trace(jobs, args.out)
        except OSError as exc:
            raise CommandError(f"twin synth: cannot write {args.out}: {exc}") from None
        print(f"wrote {len(jobs)} jobs to {args.out}")
        return 0
    if args.action == "bench":
        import json

        from gpuyard.twin.bench import bench

        openb = Path(args.openb) if args.openb else None
        if openb is not None and not (openb / "openb_pod_list_default.csv").is_file():
            raise CommandError(f"twin bench: --openb {openb}: no openb_pod_list_default.csv")
        from gpuyard.progress import Steps

        bar: list[Steps] = []

        def progress(n: int, note: str) -> None:
            if not bar:
                bar.append(Steps("twin bench", n, plain_every=0, enabled=not args.quiet))
                bar[0].__enter__()
            else:
                bar[0].advance(n, note)

        try:
            doc = bench(args.size, args.seed, args.scenario, openb, progress)
        except ValueError as exc:
            raise CommandError(f"twin bench: {exc}") from None
        finally:
            if bar:
                bar[0].__exit__(None, None, None)
        text = json.dumps(doc, indent=2)
        if args.out:
            try:
                Path(args.out).write_text(text + "\n")
            except OSError as exc:
                raise CommandError(f"twin bench: cannot write {args.out}: {exc}") from None
        print(text)
        return 0
    if not (args.cluster and args.trace and args.out):
        raise CommandError("twin: --cluster, --trace and --out are required")
    from gpuyard.twin.capacity import load_teams
    from gpuyard.twin.capacity import shape_labels as capacity_labels
    from gpuyard.twin.engine import Engine, FailureSpec, FailureSpecError

    try:
        shapes = expand(load_shapes(args.cluster))
        wl = load_trace(args.trace)
        failures = FailureSpec.parse(args.failures)
        teams = load_teams(args.teams) if args.teams else None
    except ValueError as exc:  # TraceError, ShapeError, TeamsFileError, DecodeError
        raise CommandError(str(exc)) from None
    from gpuyard.scheduling.topology import Request
    from gpuyard.twin import report

    topology = Request(
        required=(args.require_topology,) if args.require_topology else (),
        preferred=args.prefer_topology or None,
    )
    if topology.required and not any(args.require_topology in capacity_labels(s) for s in shapes):
        raise CommandError(
            f"--require-topology {args.require_topology}: no node of {args.cluster} carries "
            "that label, so no gang could run"
        )
    policies = ["fifo", "gangs", "gpuyard"] if args.compare else [args.policy]
    results = []
    horizon = max((j.submit for j in wl.jobs), default=0.0) or 1.0
    show = not args.quiet and sys.stderr.isatty()
    from gpuyard.progress import Steps

    # without a terminal: a plain line per policy replayed (the bar is below)
    plain = Steps("twin run", len(policies), plain_every=0, enabled=not args.quiet and not show)
    for pol in policies:
        prog: Any = None
        if show:
            from rich.console import Console
            from rich.progress import Progress

            prog = Progress(transient=True, console=Console(stderr=True))
            prog.start()
            task = prog.add_task(f"{pol}", total=horizon)

            def tick(t: float, prog: Any = prog, task: Any = task) -> None:
                prog.update(task, completed=min(t, horizon))

        try:
            eng = Engine(
                shapes,
                wl.jobs,
                pol,
                failures,
                seed=args.seed,
                progress=tick if show else None,
                batch=args.batch,
                teams=teams,
                balloons=args.balloons,
                skip_never_fitting=args.skip_never_fitting,
                topology=topology,
                checkpoint_interval=args.checkpoint_interval,
                victims=args.victims,
            )
        except FailureSpecError as exc:  # --failures too many to simulate
            if prog is not None:
                prog.stop()
            raise CommandError(f"--failures: {exc}") from None
        except ValueError as exc:  # a job that could never run on this cluster
            if prog is not None:
                prog.stop()
            raise CommandError(
                f"{wl.source}: {exc} (--skip-never-fitting replays the rest)"
            ) from None
        try:
            results.append(eng.run())
        finally:
            if prog is not None:
                prog.stop()
        plain.advance(1, f"{pol} replayed")
    from datetime import datetime

    flags = [f"--{k}" for k in ("balloons", "skip_never_fitting") if getattr(args, k)]
    flags += [f"--failures {args.failures}"] if args.failures else []
    flags += [f"--batch {args.batch:g}"] if args.batch else []
    flags += [f"--teams {args.teams}"] if args.teams else []
    flags += [f"--require-topology {args.require_topology}"] if args.require_topology else []
    flags += [f"--prefer-topology {args.prefer_topology}"] if args.prefer_topology else []
    if args.checkpoint_interval:
        flags += [f"--checkpoint-interval {args.checkpoint_interval:g}s"]
    flags += [f"--victims {args.victims}"] if args.victims != "checkpoint" else []
    flags += [f"--seed {args.seed}"]
    njobs = len(wl.jobs)
    inputs = {
        "Cluster": f"{args.cluster}: {len(shapes):,} nodes, {results[0].total_gpus:,} GPUs",
        "Trace": f"{args.trace}: {njobs:,} jobs",
        "Policy": ", ".join(policies) + (" (--compare)" if args.compare else ""),
        "Flags": " ".join(f.replace("_", "-") for f in flags),
        "Run at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with _status(args, "writing the report"):
        doc = report.write(Path(args.out), results, wl.counts, inputs)
    ms = [doc] if "compare" not in doc else list(doc["compare"].values())
    from gpuyard.twin.report_html import headline

    for m in ms:
        print(headline(m))
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def _status(args: argparse.Namespace, what: str) -> Any:
    """A rich spinner on stderr when it is a terminal and not --quiet; else nothing."""
    import contextlib

    if args.quiet or not sys.stderr.isatty():
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(what)
