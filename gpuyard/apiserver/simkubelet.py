"""What a kubelet would answer for a pod, on the embedded cluster's simulated nodes.

`pods/log` gives the simulated container's lines: those of the pod's `gpuyard.io/sim-log`
annotation (one line each, written when the container started) or, without it, a small
model (a start line, then one progress line every PROGRESS_S seconds while it runs, and
an exit line once it has terminated). `tailLines`, `timestamps`, `limitBytes`,
`previous` (refused when the container never restarted) and `follow` (streams until the
pod ends, is deleted, or the client leaves) are served as a kubelet serves them.

`exec`, `attach` and `portforward` are refused with a 400 saying that the node is
simulated: there is no container process to reach.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from gpuyard.apiserver.errors import APIError

SIM_LOG_ANNOTATION = "gpuyard.io/sim-log"
PROGRESS_S = 5.0
FOLLOW_POLL_S = 0.5
CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
_TERMINAL = ("Succeeded", "Failed")


def bad_request(msg: str) -> APIError:
    return APIError(400, "BadRequest", msg)


def refuse_connect(pod: Mapping[str, Any], sub: str) -> APIError:
    """The answer to exec/attach/portforward on a simulated pod."""
    meta = pod.get("metadata") or {}
    node = (pod.get("spec") or {}).get("nodeName") or ""
    where = f"simulated node {node!r}" if node else "no node yet (simulated cluster)"
    what = {"portforward": "port-forward"}.get(sub, sub)
    return bad_request(
        f"{what} is not available for pod {meta.get('name', '')!r}: it runs on {where}; "
        "gpuyard's embedded cluster simulates containers, so there is no process to reach "
        "(use `kubectl logs` for the simulated output)"
    )


def _parse_time(s: Any) -> datetime | None:
    if not isinstance(s, str) or not s:
        return None
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def _container(pod: Mapping[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """The named container (or the only one) and its status; 400 as a kubelet words it."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    names = [str(c.get("name", "")) for c in spec.get("containers") or []]
    pname = meta.get("name", "")
    if not name:
        if len(names) != 1:
            raise bad_request(
                f"a container name must be specified for pod {pname}, "
                f"choose one of: [{' '.join(names)}]"
            )
        name = names[0]
    elif name not in names:
        raise bad_request(f"container {name} is not valid for pod {pname}")
    st = pod.get("status") or {}
    for cs in st.get("containerStatuses") or []:
        if cs.get("name") == name:
            return name, cs
    return name, {}


def _lines(
    pod: Mapping[str, Any], cname: str, cs: Mapping[str, Any], now: datetime, previous: bool
) -> list[tuple[datetime, str]]:
    """(time, text) of each line the simulated container has written so far."""
    pname = (pod.get("metadata") or {}).get("name", "")
    state = cs.get("lastState" if previous else "state") or {}
    run = state.get("running") or {}
    term = state.get("terminated") or {}
    start = _parse_time(run.get("startedAt") or term.get("startedAt"))
    if start is None:
        start = _parse_time((pod.get("status") or {}).get("startTime"))
    if start is None:
        waiting = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
        raise bad_request(f'container "{cname}" in pod "{pname}" is waiting to start: {waiting}')
    end = _parse_time(term.get("finishedAt")) if term else None
    if end is None and (pod.get("status") or {}).get("phase") in _TERMINAL and not run:
        end = start
    upto = min(now, end) if end is not None else now
    ann = ((pod.get("metadata") or {}).get("annotations") or {}).get(SIM_LOG_ANNOTATION)
    out: list[tuple[datetime, str]] = []
    if isinstance(ann, str):
        out = [(start, line) for line in ann.splitlines()]
    else:
        node = (pod.get("spec") or {}).get("nodeName") or ""
        image = cs.get("image") or ""
        out.append(
            (
                start,
                f"[gpuyard-sim] container {cname} started (image {image}) on simulated node {node}",
            )
        )
        k = 1
        while True:
            t = start + timedelta(seconds=PROGRESS_S * k)
            if t > upto:
                break
            out.append((t, f"[gpuyard-sim] {cname}: running, {int(PROGRESS_S * k)}s elapsed"))
            k += 1
    if end is not None:
        code = term.get("exitCode", 0)
        reason = term.get("reason") or ("Completed" if code == 0 else "Error")
        out.append((end, f"[gpuyard-sim] {cname}: exited with code {code} ({reason})"))
    return out


def _int_param(query: Mapping[str, str], key: str) -> int | None:
    v = query.get(key)
    if v is None or v == "":
        return None
    try:
        n = int(v)
    except ValueError:
        raise bad_request(f"{key}: invalid value {v!r}: must be an integer") from None
    if n < 0 and key != "tailLines":
        raise bad_request(f"{key}: invalid value {n}: must be greater than or equal to 0")
    return n


def _render(lines: list[tuple[datetime, str]], stamps: bool) -> bytes:
    return b"".join(((_ts(t) + " " if stamps else "") + text + "\n").encode() for t, text in lines)


def log_response(
    pod: Mapping[str, Any],
    query: Mapping[str, str],
    refetch: Callable[[], Mapping[str, Any] | None],
) -> tuple[bytes | AsyncIterator[bytes], str]:
    """The body of GET pods/NAME/log: bytes, or a stream when follow=true; and the
    container's name. `refetch` reads the pod again (None once it is gone)."""
    cname, cs = _container(pod, query.get("container", ""))
    previous = query.get("previous") in ("true", "1")
    stamps = query.get("timestamps") in ("true", "1")
    if previous and not (cs.get("restartCount") or 0) and not cs.get("lastState"):
        pname = (pod.get("metadata") or {}).get("name", "")
        raise bad_request(f'previous terminated container "{cname}" in pod "{pname}" not found')
    tail = _int_param(query, "tailLines")
    limit = _int_param(query, "limitBytes")
    since = _int_param(query, "sinceSeconds")
    now = datetime.now(UTC)
    lines = _lines(pod, cname, cs, now, previous)
    if since is not None:
        lines = [ln for ln in lines if ln[0] >= now - timedelta(seconds=since)]
    if tail is not None and tail >= 0:
        lines = lines[len(lines) - tail :] if tail else []
    first = _render(lines, stamps)
    if limit is not None:
        first = first[:limit]
    if previous or query.get("follow") not in ("true", "1"):
        return first, cname
    seen = len(_lines(pod, cname, cs, now, False))

    async def stream() -> AsyncIterator[bytes]:
        nonlocal seen
        if first:
            yield first
        while True:
            await asyncio.sleep(FOLLOW_POLL_S)
            cur = refetch()
            if cur is None:
                return
            _, cur_cs = _container(cur, cname)
            got = _lines(cur, cname, cur_cs, datetime.now(UTC), False)
            if len(got) > seen:
                yield _render(got[seen:], stamps)
                seen = len(got)
            if (cur.get("status") or {}).get("phase") in _TERMINAL or (
                cur.get("metadata") or {}
            ).get("deletionTimestamp"):
                return

    return stream(), cname
