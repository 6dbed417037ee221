"""The team webhook in a process of its own, as `gpuyard up` runs it (on a real cluster
it is a Deployment of its own): the API server's process then never shares an event
loop, nor the interpreter lock, with the webhook's TLS and request handling.

The parent (`ProcessWebhook`, in the teams component) keeps the key material (issue,
rotation: certs.py), starts the child, and feeds it over its stdin, one JSON object a
line: `{"teams": {namespace: [team, borrow, egress]}}` first and whenever Teams change, and
`{"reload": true}` after a certificate rotation was published. The child reads the
first table before it listens (and would answer 503 without one: under failurePolicy
Fail the API server then refuses team pods rather than letting them through unchanged),
prints `{"port": N, "metrics_port": M}` once listening, and exits when its stdin
closes (the parent is gone). A child that dies is started again on the same port.
The child serves its webhook metrics on 127.0.0.1:M; the parent's `ChildMetrics`
collector reads them at each scrape, so they appear on the parent's metrics address
(`gpuyard up`'s one address) as if made there.

    hook = ProcessWebhook(cert_dir)
    url = await hook.start()
    hook.set_teams(table)                          # namespace -> TeamInfo
    if hook.rotate(now, activate=False): publish(hook.ca_bundle); hook.activate()
    await hook.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from gpuyard.cliargs import PORT
from gpuyard.teams import certs
from gpuyard.teams.admission import TeamInfo
from gpuyard.teams.webhook import PATH, WebhookServer

log = logging.getLogger("gpuyard.teams.webhook")

START_TIMEOUT_S = 30.0
# what the parent hands on from the child (its webhook series, not its process ones,
# which the parent has of its own)
CHILD_METRIC_PREFIX = "gpuyard_webhook_"
MAX_METRICS_BYTES = 4 << 20
CONTROL_LINE_LIMIT = 256 << 20


class ChildMetrics:
    """A Prometheus collector that hands on the webhook child's own metrics, read from
    its loopback port at each scrape (nothing when the child is down or slow)."""

    def __init__(self, hook: ProcessWebhook, timeout_s: float = 2.0) -> None:
        self.hook = hook
        self.timeout_s = timeout_s

    def describe(self) -> list[Any]:
        return []  # made at collect time: never checked against other collectors' names

    def collect(self) -> Any:
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        port = self.hook.metrics_port
        if not port:
            return
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=self.timeout_s) as r:  # noqa: S310
                text = r.read(MAX_METRICS_BYTES).decode()
        except (OSError, ValueError):
            return
        for family in text_string_to_metric_families(text):
            if family.name.startswith(CHILD_METRIC_PREFIX):
                yield family


class ProcessWebhook:
    """The parent's handle on the webhook child process (see the module docstring)."""

    def __init__(
        self, cert_dir: str | Path, host: str = "127.0.0.1", port: int = 0, restart_s: float = 1.0
    ) -> None:
        # Key material only: this object never serves.
        self.keys = WebhookServer(lambda ns: None, cert_dir, host=host, port=port)
        self.host = host
        self.port = port
        self.restart_s = restart_s
        self.proc: asyncio.subprocess.Process | None = None
        self.table: dict[str, TeamInfo] = {}
        self.restarts = 0
        self.metrics_port = 0
        self.metrics: ChildMetrics | None = None
        self._registry: Any = None
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{PATH}"

    @property
    def bundle(self) -> certs.Bundle | None:
        return self.keys.bundle

    @property
    def ca_pem(self) -> bytes:
        return self.keys.ca_pem

    @property
    def ca_bundle(self) -> bytes:
        return self.keys.ca_bundle

    def _send(self, msg: dict[str, Any]) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return  # a restarted child gets the current state when it starts
        with contextlib.suppress(ConnectionError, RuntimeError):
            proc.stdin.write(orjson.dumps(msg) + b"\n")

    def set_teams(self, table: Mapping[str, TeamInfo]) -> None:
        """The namespace -> team table the child answers from."""
        self.table = dict(table)
        self._send(self._teams_msg())

    def _teams_msg(self) -> dict[str, Any]:
        return {"teams": {ns: [t.name, t.borrow, t.egress] for ns, t in self.table.items()}}

    def rotate(
        self,
        now: dt.datetime | None = None,
        renew_before: dt.timedelta = certs.RENEW_BEFORE,
        activate: bool = True,
    ) -> bool:
        changed = self.keys.rotate(now, renew_before, activate=False)
        if changed and activate:
            self.activate()
        return changed

    def activate(self) -> None:
        """The child presents the current certificate on new connections."""
        self._send({"reload": True})

    async def _spawn(self) -> None:
        b = self.keys.bundle
        assert b is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gpuyard.teams.webhook_proc",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--cert",
            str(b.cert_file),
            "--key",
            str(b.key_file),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.proc = proc
        self._send(self._teams_msg())  # read before it listens: ready from its first call
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
            hello = orjson.loads(line)
            self.port = int(hello["port"])
            self.metrics_port = int(hello.get("metrics_port") or 0)
        except (TimeoutError, ValueError, KeyError, TypeError) as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise RuntimeError(f"the webhook process did not start: {exc!r}") from None

    async def start(self, registry: Any = None) -> str:
        """Start the child; its webhook metrics join `registry` (the process's default
        one when None)."""
        from prometheus_client import REGISTRY

        self.keys.rotate()
        await self._spawn()
        self._registry = registry or REGISTRY
        self.metrics = ChildMetrics(self)
        self._registry.register(self.metrics)
        self._watch = asyncio.create_task(self._supervise(), name="teams-webhook-process")
        log.info("team webhook listening on %s (own process %s)", self.url, self.proc_pid)
        return self.url

    @property
    def proc_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self.proc is not None
            rc = await self.proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.warning("team webhook process exited (%s); starting it again", rc)
            await asyncio.sleep(self.restart_s)
            try:
                await self._spawn()
            except (RuntimeError, OSError) as exc:
                log.warning("could not start the team webhook process: %s", exc)

    async def stop(self) -> None:
        self._stopping = True
        if self.metrics is not None:
            with contextlib.suppress(KeyError):
                self._registry.unregister(self.metrics)
            self.metrics = None
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the child exits at end of its input
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self.proc = None


# ------------------------------------------------------------------ the child


async def child(host: str, port: int, cert: Path, key: Path) -> None:
    table: dict[str, TeamInfo] = {}
    server = WebhookServer(table.get, cert.parent, host=host, port=port)
    server.ready = False
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CONTROL_LINE_LIMIT)  # a big team table is one line
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def apply(line: bytes) -> None:
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("ignored a malformed control line")
            return
        if "teams" in msg:
            new = {
                ns: TeamInfo(str(v[0]), bool(v[1]), str(v[2]) if len(v) > 2 else "")
                for ns, v in msg["teams"].items()
            }
            server.lookup = new.get
            server.ready = True
        if msg.get("reload") and server._ssl is not None:
            try:
                server._ssl.load_cert_chain(str(cert), str(key))
            except (OSError, ValueError) as exc:
                log.warning("could not load the new certificate: %s", exc)

    # The parent sends the team table first: apply it before listening.
    first = await reader.readline()
    if not first:
        return
    apply(first)
    await server.start(files=(cert, key))
    from prometheus_client import start_http_server

    from gpuyard.teams import webhook_metrics

    webhook_metrics.process_metrics()  # its series exist (at 0) before the first review
    mserver, _thread = start_http_server(0, addr="127.0.0.1")
    hello = {"port": server.port, "metrics_port": int(mserver.server_address[1])}
    sys.stdout.write(orjson.dumps(hello).decode() + "\n")
    sys.stdout.flush()
    try:
        while line := await reader.readline():
            apply(line)
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="gpuyard team webhook (child of gpuyard up)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=PORT, default=0)
    ap.add_argument("--cert", type=Path, required=True)
    ap.add_argument("--key", type=Path, required=True)
    a = ap.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group: the parent stops this child
    # itself (it closes the child's input), so the child neither dies half-way nor
    # prints a KeyboardInterrupt traceback into the parent's output.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    coro = child(a.host, a.port, a.cert, a.key)
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
