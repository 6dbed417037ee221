"""The researcher's command line: submit, jobs, describe, delete, nodes, status.

Works against any cluster through a kubeconfig (`--kubeconfig`, then KUBECONFIG, then
~/.kube/config), with `-n`/`-A` and `-o json|yaml` as kubectl users expect. A job file
is checked locally before anything is sent; a bad one gets one line per error, each
naming its field, and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from gpuyard import names
from gpuyard.kube import objects as o


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)"
    )
    if command not in ("nodes", "status"):  # nodes and the summary are cluster-wide
        parser.add_argument(
            "-n", "--namespace", help="namespace (default: the kubeconfig's, else default)"
        )
    if command in ("jobs", "describe", "nodes", "status", "submit"):
        formats = (
            ("table", "wide", "json", "yaml") if command == "jobs" else ("table", "json", "yaml")
        )
        parser.add_argument(
            "-o",
            "--output",
            choices=formats,
            default="table",
            help="output format (default table"
            + ("; wide adds each job's nodes" if command == "jobs" else "")
            + ")",
        )
    if command == "jobs":
        parser.add_argument(
            "-A", "--all-namespaces", action="store_true", help="jobs in every namespace"
        )
    if command == "submit":
        parser.add_argument(
            "-f",
            "--filename",
            required=True,
            help="a TrainingJob YAML or JSON file ('-' for stdin)",
        )
        parser.add_argument("--dry-run", action="store_true", help="validate, send nothing")
    if command in ("describe", "delete"):
        parser.add_argument(
            "kind", choices=("job", "jobs", "trainingjob", "tj"), help="what to act on"
        )
        parser.add_argument("name", help="the job's name")
    parser.set_defaults(_command=command)


class CliError(Exception):
    """A one-line error for the user; exit status `code` (2: the input was unusable)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


INITIALLY = "PodGroupInitiallyScheduled"


async def _job_podgroup(client: Any, name: str, ns: str) -> dict[str, Any] | None:
    """The job's PodGroup, in whichever gang API it speaks (None: none yet)."""
    from gpuyard.kube.errors import ApiError
    from gpuyard.kube.resources import POD_GROUPS
    from gpuyard.scheduling.upstream import UPSTREAM_POD_GROUPS

    for res in (POD_GROUPS, UPSTREAM_POD_GROUPS):
        try:
            pg = await client.get(res, name, ns)
        except ApiError:  # NotFound, or a cluster that does not serve the kind
            continue
        return dict(pg)
    return None


def _print(obj: Any, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(obj, indent=2, default=str))
    else:
        print(yaml.safe_dump(obj, sort_keys=False).rstrip())


def _table(columns: list[str], rows: list[list[Any]]) -> None:
    """A table as kubectl prints one: columns padded to their widest cell, three spaces
    apart, and nothing cut (the last column, the reason, runs as long as it is)."""
    cells = [columns, *[[str(x) for x in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        line = "   ".join(c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True))
        print((line + "   " + r[-1]).rstrip() if len(r) > 1 else r[0])


def _load_job(path: str) -> dict[str, Any]:
    from gpuyard.k8s.decode import DecodeError, loads_yaml_all

    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    try:
        docs = [d for d in loads_yaml_all(data) if d is not None]
    except DecodeError as exc:
        raise CliError(f"{path}: {exc.message}", code=2) from None
    if len(docs) != 1:
        raise CliError(f"{path}: expected one TrainingJob, found {len(docs)} documents")
    if not isinstance(docs[0], dict):
        raise CliError(f"{path}: expected a TrainingJob object, found {type(docs[0]).__name__}")
    return docs[0]


LABEL_JOB = "gpuyard.io/job"


def _replica_index(pod: dict[str, Any]) -> int:
    try:
        return int(o.labels_of(pod).get("gpuyard.io/replica-index", "0"))
    except ValueError:
        return 0


async def _namespace_teams(client: Any) -> dict[str, str]:
    """namespace -> the Team whose spec.namespaces holds it (empty where Teams cannot be
    read: a cluster without the CRD, or a user without the right)."""
    from gpuyard.kube.errors import ApiError
    from gpuyard.kube.resources import TEAMS

    try:
        teams = (await client.list(TEAMS))["items"]
    except ApiError:
        return {}
    out: dict[str, str] = {}
    for t in sorted(teams, key=o.name_of):
        for n in (t.get("spec") or {}).get("namespaces") or []:
            if isinstance(n, str):
                out.setdefault(n, o.name_of(t))
    return out


def _age(ts: str | None) -> str:
    from gpuyard.k8s.text import age

    return age(ts)


async def _client(args: argparse.Namespace) -> Any:
    from gpuyard.kube.client import Client
    from gpuyard.kube.errors import KubeError

    try:
        return Client.from_kubeconfig(args.kubeconfig, component="cli")
    except KubeError as exc:
        raise CliError(str(exc)) from None


async def _run(args: argparse.Namespace) -> int:
    from gpuyard.kube.errors import ApiError, KubeError

    cmd = args._command
    if cmd == "submit":
        job = _load_job(args.filename)
        args._job = job  # read once: '-' (stdin) cannot be read twice
        from gpuyard.jobs.spec import validate_job

        errors = validate_job(job)
        if errors:
            raise CliError("\n".join(f"{args.filename}: {e}" for e in errors), code=2)
        if args.dry_run:
            print(f"trainingjob/{job['metadata'].get('name')} is valid (dry run, nothing sent)")
            return 0
    client = await _client(args)
    ns = getattr(args, "namespace", None) or client.namespace
    try:
        return await _dispatch(client, args, ns, cmd)
    except ApiError as exc:
        raise CliError(exc.message or str(exc)) from None
    except BrokenPipeError:
        raise  # the reader went away (| head): not the cluster's fault
    except (KubeError, OSError) as exc:
        raise CliError(f"cannot reach the cluster at {client.config.server}: {exc}") from None
    finally:
        await client.close()


async def _check_priority_class(client: Any, path: str, job: dict[str, Any]) -> None:
    """What the CRD's schema cannot say: the PriorityClass the workers get must exist
    (else the API server refuses every worker). Skipped where it cannot be read."""
    from gpuyard.kube.errors import ApiError, NotFound
    from gpuyard.kube.resources import PRIORITY_CLASSES

    pcn = (job.get("spec") or {}).get("priorityClassName")
    if not pcn:
        return
    try:
        await client.get(PRIORITY_CLASSES, pcn)
    except NotFound:
        try:
            have = [o.name_of(p) for p in (await client.list(PRIORITY_CLASSES))["items"]]
        except ApiError:
            have = []
        known = f" (the cluster has: {', '.join(sorted(have))})" if have else ""
        raise CliError(
            f"{path}: spec.priorityClassName: no PriorityClass named {pcn!r}{known}", code=2
        ) from None
    except ApiError:
        return


async def _dispatch(client: Any, args: argparse.Namespace, ns: str, cmd: str) -> int:
    from gpuyard.kube.errors import ApiError, NotFound
    from gpuyard.kube.resources import EVENTS, NODES, POD_GROUPS, PODS, TRAINING_JOBS

    if cmd == "submit":
        job = args._job
        job.setdefault("metadata", {})["namespace"] = (
            args.namespace or job["metadata"].get("namespace") or ns
        )
        await _check_priority_class(client, args.filename, job)
        out = await client.create(job)
        if args.output == "table":
            print(
                f"trainingjob/{out['metadata']['name']} created in {out['metadata']['namespace']}"
            )
        else:
            _print(out, args.output)
        return 0
    if cmd == "jobs":
        items = (await client.list(TRAINING_JOBS, None if args.all_namespaces else ns))["items"]
        if args.output in ("json", "yaml"):
            _print({"apiVersion": "v1", "kind": "List", "items": items}, args.output)
            return 0
        teams = await _namespace_teams(client)
        wide = args.output == "wide"
        nodes_of: dict[str, list[str]] = {}
        if wide:
            pods = (
                await client.list(
                    PODS, None if args.all_namespaces else ns, label_selector=LABEL_JOB
                )
            )["items"]
            for p in sorted(pods, key=_replica_index):
                node = (p.get("spec") or {}).get("nodeName")
                if node and not o.is_pod_terminal(p):
                    key = f"{o.namespace_of(p)}/{o.labels_of(p).get(LABEL_JOB)}"
                    nodes_of.setdefault(key, []).append(node)
        rows = []
        for j in items:
            st = j.get("status") or {}
            spec = j.get("spec") or {}
            phase = st.get("phase", "Pending")
            why = (
                st.get("message", "")
                if phase in ("Pending", "Restarting", "Failed", "Scheduling")
                else ""
            )
            row = [
                j["metadata"]["name"],
                spec.get("team") or teams.get(j["metadata"]["namespace"], "-"),
                spec.get("replicas"),
                phase,
                st.get("restarts", 0),
                _age(j["metadata"].get("creationTimestamp")),
            ]
            if wide:
                row.append(",".join(nodes_of.get(o.key_of(j), [])) or "-")
            row.append(why)
            rows.append(([j["metadata"]["namespace"]] if args.all_namespaces else []) + row)
        cols = ["NAME", "TEAM", "REPLICAS", "PHASE", "RESTARTS", "AGE"]
        cols += ["NODES", "WHY"] if wide else ["WHY"]
        if not rows:
            print(
                "No TrainingJobs found"
                + ("" if args.all_namespaces else f" in namespace {ns}")
                + "."
            )
            return 0
        _table((["NAMESPACE"] if args.all_namespaces else []) + cols, rows)
        return 0
    if cmd in ("describe", "delete"):
        if cmd == "delete":
            try:
                await client.delete(TRAINING_JOBS, args.name, ns, propagation_policy="Foreground")
            except NotFound:
                raise CliError(f"trainingjob {args.name!r} not found in namespace {ns}") from None
            print(
                f"trainingjob/{args.name} deleted (its workers, PodGroup, Service and hostfile go with it)"
            )
            return 0
        try:
            job = await client.get(TRAINING_JOBS, args.name, ns)
        except NotFound:
            raise CliError(f"trainingjob {args.name!r} not found in namespace {ns}") from None
        events = (await client.list(EVENTS, ns))["items"]
        pods = (await client.list(PODS, ns, label_selector=f"gpuyard.io/job={args.name}"))["items"]
        uids = {job["metadata"].get("uid")} | {p["metadata"].get("uid") for p in pods}
        pg = await _job_podgroup(client, args.name, ns)
        if pg is not None:
            uids.add(pg["metadata"].get("uid"))
        evs = sorted(
            (e for e in events if (e.get("involvedObject") or {}).get("uid") in uids),
            key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "",
        )
        if args.output != "table":
            _print({"job": job, "events": evs}, args.output)
            return 0
        st = job.get("status") or {}
        spec = job.get("spec") or {}
        teams = await _namespace_teams(client)
        print(f"Name:         {args.name}")
        print(f"Namespace:    {ns}")
        print(f"Team:         {spec.get('team') or teams.get(ns, '-')}")
        print(f"Replicas:     {spec.get('replicas')} x {spec.get('gpusPerReplica', 8)} GPUs")
        print(f"Priority:     {spec.get('priorityClassName', names.PRIORITY_NORMAL)}")
        print(f"Phase:        {st.get('phase', 'Pending')}  ({st.get('reason', '')})")
        print(f"Message:      {st.get('message', '')}")
        print(f"Restarts:     {st.get('restarts', 0)} of {spec.get('backoffLimit', 3)}")
        if st.get("preemptions"):
            print(f"Preemptions:  {st['preemptions']} (not charged as restarts)")
        print(
            f"Started:      {st.get('startTime', '-')}   Completed: {st.get('completionTime', '-')}"
        )
        if pg is not None:
            pst = pg.get("status") or {}
            if pg.get("apiVersion") == names.PODGROUP_API_VERSION:
                print(
                    f"PodGroup:     {pst.get('phase', 'Pending')} (scheduled "
                    f"{pst.get('scheduled', 0)}, running {pst.get('running', 0)})"
                )
            else:
                cond = next(
                    (c for c in pst.get("conditions") or () if c.get("type") == INITIALLY),
                    None,
                )
                said = f"{INITIALLY}={cond['status']}" if cond else "not yet scheduled"
                print(f"PodGroup:     {said} ({pg.get('apiVersion')})")
        history = st.get("history") or []
        if history:
            print("History:      how each earlier gang ended (newest last)")
            for h in history:
                print(
                    f"  {h.get('time', '-')}  gang {h.get('generation', '?')}  "
                    f"{h.get('reason', ''):<15} {h.get('cause', '')}"
                )
        print(
            f"Workers:      {st.get('runningWorkers', 0)} running, "
            f"{st.get('readyWorkers', 0)} ready"
        )
        for p in sorted(pods, key=_replica_index):
            pst = p.get("status") or {}
            print(
                f"  {p['metadata']['name']:<32} {pst.get('phase', 'Pending'):<10} {p['spec'].get('nodeName') or '-'}"
            )
        print("Events:")
        # The last 20, the job's and its PodGroup's own (restarts, why it waits) kept
        # first: a gang's 2 x N container events must not hide why it restarted.
        own = [e for e in evs if (e.get("involvedObject") or {}).get("kind") not in ("Pod", None)][
            -10:
        ]
        rest = [e for e in evs if e not in own][-(20 - len(own)) :]
        shown = [e for e in evs if e in own or e in rest]
        for e in shown:
            print(
                f"  {_age(e.get('lastTimestamp') or e.get('eventTime')):>6}  {e.get('type', ''):<8} {e.get('reason', ''):<18} {e['involvedObject']['name']}: {e.get('message', '')}"
            )
        if not evs:
            print("  <none>")
        return 0
    if cmd in ("nodes", "status"):
        nodes = (await client.list(NODES))["items"]
        pods = (
            await client.list(
                PODS, None, field_selector="status.phase!=Succeeded,status.phase!=Failed"
            )
        )["items"]
        used: Counter[str] = Counter()
        for p in pods:
            node = (p.get("spec") or {}).get("nodeName")
            if node:
                used[node] += o.pod_requests(p).get(names.RESOURCE_GPU, 0)
        if cmd == "nodes":
            rows = []
            for n in sorted(nodes, key=o.name_of):
                alloc = o.node_allocatable(n).get(names.RESOURCE_GPU, 0)
                taints = [o.taint_str(t) for t in (n.get("spec") or {}).get("taints") or []]
                ready = "Ready" if o.is_node_ready(n) else "NotReady"
                if (n.get("spec") or {}).get("unschedulable"):
                    ready += ",Cordoned"
                labels = o.labels_of(n)
                rows.append(
                    [
                        o.name_of(n),
                        ready,
                        f"{used[o.name_of(n)]}/{alloc}",
                        labels.get(names.LABEL_TEAM, "-"),
                        labels.get(names.LABEL_RACK, "-"),
                        ", ".join(taints) or "-",
                    ]
                )
            if args.output != "table":
                _print(
                    {
                        "nodes": [
                            dict(
                                zip(
                                    ["name", "status", "gpus", "team", "rack", "taints"],
                                    r,
                                    strict=True,
                                )
                            )
                            for r in rows
                        ]
                    },
                    args.output,
                )
                return 0
            _table(["NAME", "STATUS", "GPUS", "TEAM", "RACK", "TAINTS"], rows)
            return 0
        total = sum(o.node_allocatable(n).get(names.RESOURCE_GPU, 0) for n in nodes)
        allocated = sum(used.values())
        unhealthy = [
            o.name_of(n)
            for n in nodes
            if o.find_taint(n, names.TAINT_UNHEALTHY) or not o.is_node_ready(n)
        ]
        preflight = [o.name_of(n) for n in nodes if o.find_taint(n, names.TAINT_PREFLIGHT)]
        groups = (await client.list(POD_GROUPS))["items"]
        pending = [
            g
            for g in groups
            if (g.get("status") or {}).get("phase", "Pending") in ("Pending", "Scheduling")
        ]
        try:  # upstream PodGroups: pending until PodGroupInitiallyScheduled is True
            from gpuyard.scheduling.upstream import UPSTREAM_POD_GROUPS

            pending += [
                g
                for g in (await client.list(UPSTREAM_POD_GROUPS))["items"]
                if not any(
                    c.get("type") == INITIALLY and c.get("status") == "True"
                    for c in (g.get("status") or {}).get("conditions") or ()
                )
            ]
        except ApiError:
            pass  # a cluster that does not serve them
        pending_names = [f"{o.namespace_of(g)}/{o.name_of(g)}" for g in pending]
        summary: dict[str, Any] = {
            "nodes": len(nodes),
            "gpus": {"total": total, "allocated": allocated, "idle": total - allocated},
            "pendingGangs": pending_names,
            "unhealthyNodes": unhealthy,
            "preflightNodes": preflight,
        }
        if args.output != "table":
            _print(summary, args.output)
            return 0
        pct = f" ({100 * allocated / total:.0f}%)" if total else ""
        print(f"Nodes:           {len(nodes)}")
        print(
            f"GPUs:            {total} total, {allocated} allocated{pct}, {total - allocated} idle"
        )
        print(
            f"Pending gangs:   {len(pending)}"
            + (f"  ({', '.join(pending_names[:10])})" if pending else "")
        )
        print(
            f"Unhealthy nodes: {len(unhealthy)}"
            + (f"  ({', '.join(unhealthy[:10])})" if unhealthy else "")
        )
        print(
            f"Preflight nodes: {len(preflight)}"
            + (f"  ({', '.join(preflight[:10])})" if preflight else "")
        )
        return 0
    raise CliError(f"unknown command {cmd}")


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except BrokenPipeError:
        # `gpuyard jobs | head`: the reader has what it wanted; say nothing more.
        sys.stderr.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CliError as exc:
        print(f"gpuyard {args._command}: {exc}", file=sys.stderr)
        return exc.code
