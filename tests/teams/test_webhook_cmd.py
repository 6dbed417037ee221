"""`gpuyard teams-webhook` as a real process against the embedded API server: team pods
mutated, others not; the CA kept in a Secret and published in the caBundle; a second
replica shares the CA; with every replica stopped team pods are refused (fail closed);
cert-file mode serves the given certificate and picks up a replaced one; bad input is a
one-line error with exit code 2 (1 when the cluster cannot be reached). Rotation and
registration are also checked in-process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from gpuyard import manifests, names
from gpuyard.apiserver.testing import ServerProcess
from gpuyard.cluster import identities
from gpuyard.cluster.testing import wait_for
from gpuyard.crds import crd_objects
from gpuyard.kube.client import Client
from gpuyard.kube.errors import ApiError
from gpuyard.kube.resources import PODS
from gpuyard.manifests import priority_classes
from gpuyard.teams import certs
from gpuyard.teams.webhook import CONFIG_NAME, service_webhook_configuration
from gpuyard.teams.webhook_cmd import (
    MWC,
    SECRETS,
    Material,
    issue,
    load_or_create_secret,
    register,
    rotate_if_due,
)

NS = "gpuyard-system"
SECRET = "gpuyard-teams-webhook-tls"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kube(srv: ServerProcess, fn: Callable[[Client], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        async with Client.from_kubeconfig(srv.kubeconfig) as k:
            return await fn(k)

    return asyncio.run(go())


class Replica:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def ready(self) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{self.port}/readyz", context=ctx, timeout=2
            ) as r:
                return bool(r.status == 200)
        except OSError:
            assert self.proc.poll() is None, self.log.read_text()
            return False

    def served_cert(self) -> bytes:
        return fingerprint(ssl.get_server_certificate(("127.0.0.1", self.port)).encode())

    def stop(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            return -9


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Callable[..., Replica]]:
    started: list[Replica] = []

    def start(srv: ServerProcess, *extra: str, kubeconfig: str | None = None) -> Replica:
        port = free_port()
        log = tmp_path / f"webhook{len(started)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gpuyard.cli",
                    "teams-webhook",
                    "--kubeconfig",
                    kubeconfig or srv.kubeconfig,
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--webhook-url",
                    f"https://127.0.0.1:{port}/mutate-pods",
                    *extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        r = Replica(proc, port, log)
        started.append(r)
        wait_for(r.ready, 30, "the webhook to be ready")
        return r

    try:
        yield start
    finally:
        for r in started:
            if r.proc.poll() is None:
                r.stop()


def fingerprint(pem: bytes) -> bytes:
    c = x509.load_pem_x509_certificate(pem)
    return c.fingerprint(c.signature_hash_algorithm)  # type: ignore[arg-type]


def pod(name: str, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }


def team_tolerations(p: dict[str, Any]) -> list[Any]:
    return [t for t in p["spec"].get("tolerations") or [] if t.get("key") == names.TAINT_TEAM]


def setup_cluster(srv: ServerProcess) -> None:
    async def go(k: Client) -> None:
        for crd in crd_objects():
            if crd["spec"]["names"]["kind"] == "Team":
                await k.create(crd)
        for pc in priority_classes():
            await k.create(pc)
        for ns, labels in ((NS, {}), ("ns-a", {names.LABEL_TEAM: "a"}), ("ns-other", {})):
            await k.create(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": labels},
                }
            )
        await k.create(
            {
                "apiVersion": names.API_VERSION,
                "kind": "Team",
                "metadata": {"name": "a"},
                "spec": {"namespaces": ["ns-a"], "capacity": {"gpu": 1}},
            }
        )

    kube(srv, go)


def as_webhook_account(srv: ServerProcess, path: Path) -> str:
    """A kubeconfig for the gpuyard-teams-webhook ServiceAccount, under the roles that
    `gpuyard manifests` installs (its Secret rights: its own Secret by name)."""

    async def go(k: Client) -> str:
        await identities.install(k)
        tr = await k.request(
            "POST",
            f"/api/v1/namespaces/{NS}/serviceaccounts/{manifests.WEBHOOK}/token",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        )
        return str(tr["status"]["token"])

    cfg = yaml.safe_load(Path(srv.kubeconfig).read_text())
    for u in cfg["users"]:
        u["user"] = {"token": kube(srv, go)}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def mwc_ca(srv: ServerProcess) -> bytes:
    async def go(k: Client) -> bytes:
        cfg = await k.get_or_none(MWC, CONFIG_NAME)
        if cfg is None:
            return b""
        return base64.b64decode(cfg["webhooks"][0]["clientConfig"].get("caBundle") or "")

    return bytes(kube(srv, go))


def get_secret(srv: ServerProcess) -> dict[str, Any] | None:
    return kube(srv, lambda k: k.get_or_none(SECRETS, SECRET, NS))  # type: ignore[no-any-return]


def create_pod(srv: ServerProcess, name: str, ns: str) -> dict[str, Any]:
    return kube(srv, lambda k: k.create(pod(name, ns)))  # type: ignore[no-any-return]


def test_replicas_mutate_team_pods_share_one_ca_and_fail_closed(
    apiserver: ServerProcess, replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    setup_cluster(apiserver)
    # The replicas run as the install's ServiceAccount: a right its Role lacks (reading
    # its Secret through an informer, by name only) would be a 403 here.
    kc = as_webhook_account(apiserver, tmp_path / "webhook.kubeconfig")
    first = replicas(apiserver, kubeconfig=kc)
    secret = wait_for(lambda: get_secret(apiserver), 10, "the Secret")
    ca = base64.b64decode(secret["data"]["ca.crt"])
    assert wait_for(lambda: mwc_ca(apiserver) == ca, 10, "the caBundle to be the Secret's CA")
    assert first.served_cert() == fingerprint(base64.b64decode(secret["data"]["tls.crt"]))

    mutated = create_pod(apiserver, "p1", "ns-a")
    assert team_tolerations(mutated) == [
        {"key": names.TAINT_TEAM, "operator": "Equal", "value": "a", "effect": "NoSchedule"}
    ]
    terms = mutated["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert any(
        e.get("key") == names.LABEL_TEAM and e.get("values") == ["a"]
        for t in terms
        for e in t.get("matchExpressions") or []
    ), terms
    plain = create_pod(apiserver, "p2", "ns-other")
    assert team_tolerations(plain) == [] and "affinity" not in plain["spec"]

    # A second replica takes the same CA and certificate: no new Secret.
    second = replicas(apiserver, kubeconfig=kc)
    again = get_secret(apiserver)
    assert again is not None
    assert again["metadata"]["uid"] == secret["metadata"]["uid"]
    assert again["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert second.served_cert() == first.served_cert()
    assert mwc_ca(apiserver) == ca
    # The configuration now names the second replica's URL; the first stops cleanly.
    assert first.stop() == 0
    assert team_tolerations(create_pod(apiserver, "p3", "ns-a"))

    # Every replica stopped: pods in the team namespace are refused, others are not.
    assert second.stop() == 0
    with pytest.raises(ApiError) as refused:
        create_pod(apiserver, "p4", "ns-a")
    assert refused.value.status >= 400
    assert "webhook" in refused.value.message
    assert create_pod(apiserver, "p5", "ns-other")["metadata"]["name"] == "p5"
    pods = kube(apiserver, lambda k: k.list(PODS, "ns-a"))
    assert sorted(p["metadata"]["name"] for p in pods["items"]) == ["p1", "p3"]
    assert "forbidden" not in (first.log.read_text() + second.log.read_text()).lower()

    # The account reads no other Secret, not even in its own namespace.
    other = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other", "namespace": NS}}
    kube(apiserver, lambda k: k.create(other))

    async def peek() -> list[int]:
        codes = []
        async with Client.from_kubeconfig(kc) as k:
            for call in (
                lambda: k.get(SECRETS, "other", NS),
                lambda: k.list(SECRETS, NS),
                lambda: k.list(SECRETS, NS, field_selector="metadata.name=other"),
            ):
                with pytest.raises(ApiError) as no:
                    await call()
                codes.append(no.value.status)
            assert (await k.get(SECRETS, SECRET, NS))["metadata"]["name"] == SECRET
        return codes

    assert asyncio.run(peek()) == [403, 403, 403]


def test_replicas_follow_a_rotated_secret_without_dropping_connections(
    apiserver: ServerProcess, replicas: Callable[..., Replica]
) -> None:
    setup_cluster(apiserver)
    r = replicas(apiserver)
    secret = wait_for(lambda: get_secret(apiserver), 10, "the Secret")
    old = Material.from_secret(secret)
    wait_for(lambda: mwc_ca(apiserver) == old.ca_pem, 10, "the caBundle")
    conn = http.client.HTTPSConnection(
        "127.0.0.1", r.port, context=ssl.create_default_context(cadata=old.ca_pem.decode())
    )
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok"
        kept = conn.sock
        # Another replica rotated the CA (and published old + new): this one follows.
        svc = "gpuyard-teams-webhook"
        hosts = [svc, f"{svc}.{NS}", f"{svc}.{NS}.svc", f"{svc}.{NS}.svc.cluster.local"]
        fresh = issue(None, [*hosts, "127.0.0.1"], dt.datetime.now(dt.UTC))
        assert fresh is not None
        new = dataclasses.replace(fresh, previous_ca=old.ca_pem)
        secret["data"] = new.data()
        kube(apiserver, lambda k: k.replace(secret))
        wait_for(lambda: r.served_cert() == fingerprint(new.cert_pem), 10, "the new cert")
        assert mwc_ca(apiserver) == new.ca_pem + old.ca_pem
        # The connection opened before the switch goes on; the API server trusts the new.
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok" and conn.sock is kept
        assert team_tolerations(create_pod(apiserver, "p1", "ns-a"))
    finally:
        conn.close()


def test_a_cluster_without_the_team_crd_is_exit_1(apiserver: ServerProcess) -> None:
    out = run_cmd("--kubeconfig", apiserver.kubeconfig, "--listen", f"127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .endswith("install gpuyard's CRDs first (gpuyard manifests)")
    )


def write_pair(d: Path, ca: tuple[bytes, bytes], now: dt.datetime) -> tuple[bytes, Path, Path]:
    cert, key = certs.new_serving_cert(ca[0], ca[1], ["127.0.0.1", "localhost"], now)
    c, k = d / "tls.crt", d / "tls.key"
    for f, data in ((k, key), (c, cert)):
        tmp = f.with_suffix(".new")
        tmp.write_bytes(data)
        os.replace(tmp, f)
    return cert, c, k


def test_cert_file_mode_serves_the_files_and_reloads_them(
    apiserver: ServerProcess, replicas: Callable[..., Replica], tmp_path: Path
) -> None:
    setup_cluster(apiserver)
    now = dt.datetime.now(dt.UTC)
    ca = certs.new_ca(now)
    cert1, cfile, kfile = write_pair(tmp_path, ca, now)
    # The issuer injects the caBundle (as cert-manager's injector would): kept as it is.
    want = service_webhook_configuration(NS, "gpuyard-teams-webhook", ca[0])
    kube(apiserver, lambda k: k.create(want))
    r = replicas(apiserver, "--tls-cert-file", str(cfile), "--tls-key-file", str(kfile))
    assert r.served_cert() == fingerprint(cert1)

    def registered() -> bool:
        cfg = kube(apiserver, lambda k: k.get(MWC, CONFIG_NAME))
        return bool(
            cfg["webhooks"][0]["clientConfig"].get("url", "").endswith(f":{r.port}/mutate-pods")
        )

    wait_for(registered, 10, "the webhook URL to be registered")
    assert mwc_ca(apiserver) == ca[0]
    assert team_tolerations(create_pod(apiserver, "p1", "ns-a"))
    assert get_secret(apiserver) is None  # nothing self-managed

    cert2, _, _ = write_pair(tmp_path, ca, now + dt.timedelta(seconds=5))
    assert fingerprint(cert2) != fingerprint(cert1)
    wait_for(lambda: r.served_cert() == fingerprint(cert2), 10, "the new certificate")
    assert team_tolerations(create_pod(apiserver, "p2", "ns-a"))
    assert r.stop() == 0


def run_cmd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuyard.cli", "teams-webhook", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bad_input_is_one_line_and_exit_2_unreachable_cluster_exit_1(tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    port = free_port()  # nothing listens there
    kc.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}', "
        "insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    listen = f"127.0.0.1:{free_port()}"
    cases = [
        (["--kubeconfig", str(kc), "--listen", listen, "--tls-cert-file", "/nope.crt",
          "--tls-key-file", "/nope.key"], "/nope.crt"),
        (["--kubeconfig", str(tmp_path / "missing"), "--listen", listen], "kubeconfig"),
        (["--kubeconfig", str(kc), "--listen", "nonsense"], "HOST:PORT"),
        (["--kubeconfig", str(kc), "--listen", listen, "--webhook-url", "http://x/"], "https"),
    ]  # fmt: skip
    for args, says in cases:
        out = run_cmd(*args)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], (args, out.stderr)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        out = run_cmd("--kubeconfig", str(kc), "--listen", f"127.0.0.1:{taken}")
        assert out.returncode == 2 and "cannot listen" in out.stderr, out.stderr
    out = run_cmd("--kubeconfig", str(kc), "--listen", listen)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("gpuyard teams-webhook: cannot reach")


async def test_rotation_publishes_both_cas_before_the_secret_switches(
    apiserver_inproc: Any,
) -> None:
    async with Client.in_process(apiserver_inproc) as k:
        await k.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        now = dt.datetime.now(dt.UTC)
        hosts = ["svc.gpuyard-system.svc"]
        first = await load_or_create_secret(k, NS, SECRET, hosts, now)
        # A replica that loses the create race reads the winner's Secret.
        assert (await load_or_create_secret(k, NS, SECRET, hosts, now))["metadata"]["uid"] == first[
            "metadata"
        ]["uid"]
        old = Material.from_secret(first)
        published: list[tuple[bytes, bytes]] = []

        async def publish(bundle: bytes) -> None:
            current = await k.get(SECRETS, SECRET, NS)
            published.append((bundle, Material.from_secret(current).ca_pem))

        assert await rotate_if_due(k, first, hosts, now, publish) is None  # nothing due
        later = now + dt.timedelta(days=certs.CA_DAYS)
        new_obj = await rotate_if_due(k, first, hosts, later, publish)
        assert new_obj is not None
        new = Material.from_secret(new_obj)
        assert new.ca_pem != old.ca_pem and new.previous_ca == old.ca_pem
        # Published once, trusting both CAs, while the Secret still held the old one.
        assert published == [(new.ca_pem + old.ca_pem, old.ca_pem)]
        assert new.ca_bundle == new.ca_pem + old.ca_pem
        # A replica rotating from the stale Secret loses: nothing written twice.
        assert await rotate_if_due(k, first, hosts, later, publish) is None
        stored = Material.from_secret(await k.get(SECRETS, SECRET, NS))
        assert stored == new
        # Only the serving certificate due: same CA, nothing to publish.
        soon = later + dt.timedelta(days=certs.CERT_DAYS)
        renewed = await rotate_if_due(k, new_obj, hosts, soon, publish)
        assert renewed is not None and len(published) == 1
        assert Material.from_secret(renewed).ca_pem == new.ca_pem

        # Another replica writes the Secret between our publish and our write: we lose,
        # and publish what the Secret then holds (never a CA no replica serves).
        async def racing_publish(bundle: bytes) -> None:
            published.append((bundle, b""))
            if len(published) == 2:
                other = await k.get(SECRETS, SECRET, NS)
                other["metadata"].setdefault("annotations", {})["other"] = "replica"
                await k.replace(other)

        far = soon + dt.timedelta(days=certs.CA_DAYS)
        assert await rotate_if_due(k, renewed, hosts, far, racing_publish) is None
        held = Material.from_secret(await k.get(SECRETS, SECRET, NS))
        assert held.ca_pem == new.ca_pem
        assert published[-1][0] == held.ca_bundle and len(published) == 3


async def test_register_creates_updates_and_keeps_an_injected_ca(apiserver_inproc: Any) -> None:
    async with Client.in_process(apiserver_inproc) as k:
        want = service_webhook_configuration(NS, "hook", b"CA-1")
        assert await register(k, want) is True
        assert await register(k, want) is False  # nothing changed: no write
        cfg = await k.get(MWC, CONFIG_NAME)
        svc = cfg["webhooks"][0]["clientConfig"]["service"]
        assert svc == {"namespace": NS, "name": "hook", "path": "/mutate-pods", "port": 443}
        # Without a CA of its own (cert-file mode) the injected one stays.
        assert await register(k, service_webhook_configuration(NS, "hook"), keep_ca=True) is False
        moved = service_webhook_configuration(NS, "other")
        assert await register(k, moved, keep_ca=True) is True
        cc = (await k.get(MWC, CONFIG_NAME))["webhooks"][0]["clientConfig"]
        assert cc["service"]["name"] == "other"
        assert base64.b64decode(cc["caBundle"]) == b"CA-1"
        assert len((await k.list(MWC))["items"]) == 1
