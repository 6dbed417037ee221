"""`gpuyard teams-webhook`: the team admission webhook on a real cluster (a Deployment of
its own, see `gpuyard manifests`), answering from an informer on Team objects.

Certificates, two ways:
- `--tls-cert-file/--tls-key-file` (cert-manager or any other issuer): served as given
  and loaded again when the files change; whoever issued them injects the caBundle (the
  command registers the webhook but leaves its caBundle alone).
- self-managed (default): a CA and a serving certificate for `<service>.<namespace>.svc`
  kept in the Secret `<service>-tls` (created if absent; a replica that loses the create
  race uses the winner's, so replicas share one CA), the CA written into the caBundle of
  the MutatingWebhookConfiguration `gpuyard-teams`. When due (certs.py), a replica issues
  new material: after a CA change it first publishes old and new CA, then writes the
  Secret; every replica follows the Secret (watch, plus a periodic re-read) and presents
  the new certificate on new connections without dropping kept-alive ones.

Registration: clientConfig.service (`--service` in `--namespace`, port 443, path
/mutate-pods) by default, or `--webhook-url` for API servers that reach the webhook by
address. Exit codes: 2 for bad input (options, certificate files, kubeconfig, a port in
use), 1 when the cluster cannot be reached; SIGTERM/SIGINT stop it cleanly (0).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import datetime as dt
import logging
import os
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gpuyard import pki
from gpuyard.cliargs import SECONDS
from gpuyard.kube.errors import AlreadyExists, ApiError, Conflict, KubeError, NotFound
from gpuyard.kube.resources import BUILTIN, TEAMS
from gpuyard.teams import certs
from gpuyard.teams.webhook import (
    CONFIG_NAME,
    PATH,
    WebhookServer,
    service_webhook_configuration,
    webhook_configuration,
)

log = logging.getLogger("gpuyard.teams.webhook")

SECRETS = BUILTIN[("v1", "Secret")]
MWC = BUILTIN[("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")]
DEFAULT_NAMESPACE = "gpuyard-system"
DEFAULT_SERVICE = "gpuyard-teams-webhook"
DEFAULT_LISTEN = "0.0.0.0:8443"
FILE_POLL_S = 1.0
KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key")
PREVIOUS_CA = "ca-previous.crt"

Publish = Callable[[bytes], Awaitable[Any]]


class BadInput(Exception):
    """Bad options or files: exit code 2."""


class Unusable(Exception):
    """The cluster answers but lacks what the webhook needs: exit code 1."""


# ------------------------------------------------------------------ key material


@dataclass(frozen=True)
class Material:
    """What the Secret holds: CA (with key), serving certificate (with key), and the CA
    before the last CA rotation (still trusted by the caBundle)."""

    ca_pem: bytes
    ca_key_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    previous_ca: bytes = b""

    @property
    def ca_bundle(self) -> bytes:
        if self.previous_ca and self.previous_ca != self.ca_pem:
            return self.ca_pem + self.previous_ca
        return self.ca_pem

    def parts(self) -> tuple[bytes, bytes, bytes, bytes]:
        """In the order of KEYS."""
        return (self.ca_pem, self.ca_key_pem, self.cert_pem, self.key_pem)

    def data(self) -> dict[str, str]:
        raw = dict(zip(KEYS, self.parts(), strict=True))
        if self.previous_ca:
            raw[PREVIOUS_CA] = self.previous_ca
        return {k: base64.b64encode(v).decode() for k, v in raw.items()}

    @classmethod
    def from_secret(cls, obj: dict[str, Any]) -> Material:
        data = obj.get("data") or {}
        missing = [k for k in KEYS if not data.get(k)]
        if missing:
            name = (obj.get("metadata") or {}).get("name")
            raise ValueError(f"Secret {name} lacks {', '.join(missing)}")
        b = {k: base64.b64decode(v) for k, v in data.items() if isinstance(v, str)}
        return cls(b["ca.crt"], b["ca.key"], b["tls.crt"], b["tls.key"], b.get(PREVIOUS_CA, b""))


def issue(
    have: Material | None,
    hosts: list[str],
    now: dt.datetime,
    renew_before: dt.timedelta = certs.RENEW_BEFORE,
) -> Material | None:
    """New material when none exists or the current one is due (certs.ensure's rules);
    None when `have` is still good."""
    with tempfile.TemporaryDirectory(prefix="gpuyard-teams-webhook-") as tmp:
        d = Path(tmp)
        if have is not None:
            for k, v in zip(KEYS, have.parts(), strict=True):
                pki.write_private(d / k, v)
        b = certs.ensure(d, hosts, now, renew_before=renew_before)
        if have is not None and not b.rotated and b.ca_pem == have.ca_pem:
            return None
        previous = have.previous_ca if have is not None else b""
        if have is not None and b.ca_pem != have.ca_pem:
            previous = have.ca_pem
        return Material(b.ca_pem, (d / "ca.key").read_bytes(), b.cert_pem, b.key_pem, previous)


def secret_object(namespace: str, name: str, m: Material) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "gpuyard"},
        },
        "type": "Opaque",
        "data": m.data(),
    }


async def load_or_create_secret(
    client: Any, namespace: str, name: str, hosts: list[str], now: dt.datetime
) -> dict[str, Any]:
    """The Secret with the shared key material; created when absent. A replica that
    loses the create race reads the winner's."""
    obj: dict[str, Any] | None = await client.get_or_none(SECRETS, name, namespace)
    if obj is None:
        m = issue(None, hosts, now)
        assert m is not None
        try:
            obj = await client.create(secret_object(namespace, name, m))
            log.info("created Secret %s/%s with a new CA", namespace, name)
        except AlreadyExists:
            obj = await client.get(SECRETS, name, namespace)
    assert obj is not None
    return obj


async def rotate_if_due(
    client: Any,
    secret: dict[str, Any],
    hosts: list[str],
    now: dt.datetime,
    publish: Publish,
    renew_before: dt.timedelta = certs.RENEW_BEFORE,
) -> dict[str, Any] | None:
    """Issue new material when due and write it to the Secret; the new Secret, or None
    when nothing was due or another replica wrote first. After a CA change the caBundle
    trusting old and new CA is published before the Secret changes (so no replica
    presents a certificate the API server does not trust yet)."""
    have = Material.from_secret(secret)
    new = issue(have, hosts, now, renew_before)
    if new is None:
        return None
    meta = secret.get("metadata") or {}
    if new.ca_pem != have.ca_pem:
        current = await client.get(SECRETS, meta.get("name"), meta.get("namespace"))
        if (current.get("metadata") or {}).get("resourceVersion") != meta.get("resourceVersion"):
            return None  # another replica got there first: follow its Secret
        await publish(new.ca_bundle)
    obj = copy.deepcopy(secret)
    obj["data"] = new.data()
    try:
        out: dict[str, Any] = await client.replace(obj)
    except Conflict:
        # Another replica wrote first: trust what the Secret now holds, not our CA.
        current = await client.get(SECRETS, meta.get("name"), meta.get("namespace"))
        if new.ca_pem != have.ca_pem:
            await publish(Material.from_secret(current).ca_bundle)
        return None
    log.info("rotated the webhook certificate%s", " and CA" if new.ca_pem != have.ca_pem else "")
    return out


# ------------------------------------------------------------------ registration


async def register(client: Any, want: dict[str, Any], keep_ca: bool = False) -> bool:
    """Create the MutatingWebhookConfiguration, or update the fields gpuyard sets where
    they differ (keep_ca: leave an injected caBundle alone). True if it wrote."""
    for _ in range(5):
        have = await client.get_or_none(MWC, CONFIG_NAME)
        if have is None:
            try:
                await client.create(want)
                return True
            except AlreadyExists:
                continue
        hooks = copy.deepcopy(want["webhooks"])
        old = have.get("webhooks") or []
        if keep_ca and old:
            ca = (old[0].get("clientConfig") or {}).get("caBundle")
            if ca:
                hooks[0]["clientConfig"]["caBundle"] = ca
        if len(old) == len(hooks) and all(
            all(o.get(k) == v for k, v in h.items()) for o, h in zip(old, hooks, strict=True)
        ):
            return False
        obj = copy.deepcopy(have)
        # Fields gpuyard does not set (defaults the server filled in) are kept.
        obj["webhooks"] = [{**(old[i] if i < len(old) else {}), **h} for i, h in enumerate(hooks)]
        try:
            await client.replace(obj)
            return True
        except Conflict:
            continue
    raise KubeError(f"could not update MutatingWebhookConfiguration {CONFIG_NAME}: conflicts")


# ------------------------------------------------------------------ the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", help="kubeconfig (default: in-cluster, KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to serve HTTPS on ({DEFAULT_LISTEN})"
    )
    parser.add_argument(
        "--namespace", default=DEFAULT_NAMESPACE, help=f"its namespace ({DEFAULT_NAMESPACE})"
    )
    parser.add_argument(
        "--service", default=DEFAULT_SERVICE, help=f"its Service's name ({DEFAULT_SERVICE})"
    )
    parser.add_argument("--tls-cert-file", help="serve this certificate (reloaded on change)")
    parser.add_argument("--tls-key-file", help="its private key")
    parser.add_argument(
        "--webhook-url",
        help="register this https URL instead of the Service (API servers that reach "
        "the webhook by address; give every replica the same one)",
    )
    parser.add_argument(
        "--check-seconds",
        type=SECONDS,
        default=300.0,
        help="re-read the Secret and rotate when due this often (300)",
    )


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BadInput(f"--listen {value!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _check_args(args: argparse.Namespace) -> None:
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        raise BadInput("--tls-cert-file and --tls-key-file go together")
    if args.tls_cert_file:
        for f in (args.tls_cert_file, args.tls_key_file):
            if not os.path.isfile(f):
                raise BadInput(f"cannot read {f}: no such file")
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                args.tls_cert_file, args.tls_key_file
            )
        except (OSError, ssl.SSLError) as exc:
            raise BadInput(f"cannot load {args.tls_cert_file} with its key: {exc}") from None
    if args.webhook_url:
        u = urlsplit(args.webhook_url)
        if u.scheme != "https" or not u.hostname:
            raise BadInput(f"--webhook-url {args.webhook_url!r}: expected https://HOST[:PORT]/…")
    for what, v in (("--namespace", args.namespace), ("--service", args.service)):
        if not v or "/" in v or any(c.isspace() for c in v):
            raise BadInput(f"{what} {v!r} is not a name")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serving_hosts(args: argparse.Namespace) -> list[str]:
    svc, ns = args.service, args.namespace
    hosts = [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"]
    if args.webhook_url:
        h = urlsplit(args.webhook_url).hostname
        if h and h not in hosts:
            hosts.append(h)
    return hosts


def wanted_configuration(args: argparse.Namespace, ca_pem: bytes) -> dict[str, Any]:
    if args.webhook_url:
        want = webhook_configuration(args.webhook_url, ca_pem)
        if not ca_pem:
            del want["webhooks"][0]["clientConfig"]["caBundle"]
        return want
    return service_webhook_configuration(args.namespace, args.service, ca_pem)


class Command:
    """One running `gpuyard teams-webhook` (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, client: Any, sock: socket.socket) -> None:
        self.args = args
        self.client = client
        self.stop = asyncio.Event()
        self.dir = Path(tempfile.mkdtemp(prefix="gpuyard-teams-webhook-"))
        host, port = sock.getsockname()[:2]
        self.server = WebhookServer(lambda ns: None, self.dir, host=host, port=port, sock=sock)
        self.server.ready = False
        self.secret_name = f"{args.service}-tls"
        self.hosts = serving_hosts(args)
        self.serving = b""  # the certificate now presented
        self.tasks: list[asyncio.Task[Any]] = []
        self.informers: list[Any] = []
        self._lock = asyncio.Lock()

    # -- serving material

    def _present(self, cert: bytes, key: bytes) -> tuple[Path, Path]:
        c, k = self.dir / "tls.crt", self.dir / "tls.key"
        pki.write_private(k, key)
        pki.write_private(c, cert)
        if self.server._ssl is not None:
            self.server.load_files(c, k)
            log.info("now presenting a new certificate")
        self.serving = cert
        return c, k

    async def _publish(self, ca_bundle: bytes) -> None:
        if await register(self.client, wanted_configuration(self.args, ca_bundle)):
            log.info("published the caBundle of %s", CONFIG_NAME)

    async def _secret(self) -> Material | None:
        """The Secret's material as it is now (None, with a warning, when unusable)."""
        obj = await self.client.get_or_none(SECRETS, self.secret_name, self.args.namespace)
        if obj is None:
            log.warning("the Secret %s is gone; the next check creates it", self.secret_name)
            return None
        try:
            return Material.from_secret(obj)
        except ValueError as exc:
            log.warning("ignored the Secret: %s", exc)
            return None

    async def _follow(self, *_: Any) -> None:
        """Make sure the webhook configuration trusts the Secret's CA, then present its
        certificate. The Secret is read afresh (under a lock), so an older copy never
        overwrites what a newer one published."""
        try:
            async with self._lock:
                m = await self._secret()
                if m is None:
                    return
                await self._publish(m.ca_bundle)
                if m.cert_pem != self.serving:
                    self._present(m.cert_pem, m.key_pem)
        except KubeError as exc:
            log.warning("could not follow the Secret: %s", exc)

    async def _rotate(self) -> Material:
        """Create the Secret if absent, rotate when due; what it now holds."""
        now = dt.datetime.now(dt.UTC)
        ns, name = self.args.namespace, self.secret_name
        async with self._lock:
            secret = await load_or_create_secret(self.client, ns, name, self.hosts, now)
            await rotate_if_due(self.client, secret, self.hosts, now, self._publish)
            return Material.from_secret(await self.client.get(SECRETS, name, ns))

    async def _check_loop(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.args.check_seconds)
            if self.stop.is_set():
                return
            try:
                await self._rotate()
            except (KubeError, OSError, ValueError) as exc:
                log.warning("certificate check failed: %s", exc)
            await self._follow()

    async def _watch_files(self) -> None:
        cert, key = self.args.tls_cert_file, self.args.tls_key_file
        seen = (Path(cert).read_bytes(), Path(key).read_bytes())
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), FILE_POLL_S)
            try:
                now = (Path(cert).read_bytes(), Path(key).read_bytes())
            except OSError as exc:
                log.warning("cannot read the certificate files: %s", exc)
                continue
            if now == seen:
                continue
            try:
                self.server.load_files(cert, key)
            except (OSError, ssl.SSLError) as exc:  # half-written: try again next time
                log.warning("cannot load the new certificate yet: %s", exc)
                continue
            seen = now
            log.info("now presenting the certificate from %s", cert)

    # -- the whole run

    async def main(self) -> None:
        from gpuyard.kube.informer import Informer
        from gpuyard.teams.component import TeamLookup

        args, client = self.args, self.client
        try:
            await client.list(TEAMS)  # reachable, and the Team CRD is installed
        except NotFound:
            raise Unusable(
                "the cluster serves no Teams (gpuyard.io/v1alpha1): install gpuyard's "
                "CRDs first (gpuyard manifests)"
            ) from None
        files: tuple[Path, Path]
        if args.tls_cert_file:
            files = (Path(args.tls_cert_file), Path(args.tls_key_file))
        else:
            m = await self._rotate()
            files = self._present(m.cert_pem, m.key_pem)  # registered once ready, below
        await self.server.start(files=files)
        teams = Informer(client, TEAMS, name="teams-webhook-teams")
        self.informers.append(teams)
        lookup = TeamLookup(teams)
        self.server.lookup = lookup
        teams.start()
        await teams.wait_synced()
        lookup._rebuild()
        self.server.ready = True
        if args.tls_cert_file:
            await register(client, wanted_configuration(args, b""), keep_ca=True)
            self.tasks.append(asyncio.create_task(self._watch_files()))
        else:
            await self._follow()
            secrets = Informer(
                client,
                SECRETS,
                args.namespace,
                field_selector=f"metadata.name={self.secret_name}",
                name="teams-webhook-secret",
            )
            secrets.add_handler(self._follow, self._follow, None)
            self.informers.append(secrets)
            secrets.start()
            self.tasks.append(asyncio.create_task(self._check_loop()))
        where = args.webhook_url or f"service {args.namespace}/{args.service}"
        assert self.server.sock is not None
        addr = self.server.sock.getsockname()
        log.info("team webhook serving on %s:%s%s, registered as %s", addr[0], addr[1], PATH, where)
        await self.stop.wait()

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.server.stop()
        for inf in self.informers:
            await inf.stop()
        await self.client.close()
        for f in self.dir.iterdir():
            f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.dir.rmdir()


async def _main(args: argparse.Namespace) -> int:
    from gpuyard.kube.client import Client

    try:
        _check_args(args)
        host, port = parse_listen(args.listen)
        try:
            client = Client.from_env(args.kubeconfig, component="teams-webhook", max_retries=2)
        except KubeError as exc:
            raise BadInput(str(exc)) from None
        sock = _bind(host, port)
    except BadInput as exc:
        print(f"gpuyard teams-webhook: {exc}", file=sys.stderr)
        return 2
    cmd = Command(args, client, sock)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, cmd.stop.set)
    run = asyncio.create_task(cmd.main())
    stopped = asyncio.create_task(cmd.stop.wait())
    try:
        await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            run.result()  # raises what stopped it
        return 0
    except Unusable as exc:
        print(f"gpuyard teams-webhook: {exc}", file=sys.stderr)
        return 1
    except NotFound as exc:
        print(f"gpuyard teams-webhook: not found on the cluster: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"gpuyard teams-webhook: the cluster refused: {exc}", file=sys.stderr)
        return 1
    except (KubeError, OSError) as exc:
        print(f"gpuyard teams-webhook: cannot reach the cluster: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a Secret that is not ours to read
        print(f"gpuyard teams-webhook: {exc}", file=sys.stderr)
        return 1
    finally:
        for t in (run, stopped):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await cmd.close()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(_main(args))
