"""The identities `gpuyard up` runs its components under: the ServiceAccounts and roles
of `gpuyard manifests` (gpuyard.manifests), installed into the embedded cluster at
start, with a token for each ServiceAccount from TokenRequest in
DATA_DIR/identities/NAME.token (mode 0600), renewed before it expires. A component's
client reads its token file (re-read when it changes), so every request it makes is
authorized by the install's RBAC exactly as on a real cluster: a verb missing from a
role is a 403 in every end-to-end test, not a surprise on the first real install.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from gpuyard import manifests, pki
from gpuyard.kube.errors import AlreadyExists, KubeError

log = logging.getLogger("gpuyard.up")

# component of `gpuyard up` -> the ServiceAccount (in gpuyard-system) it runs as.
SERVICE_ACCOUNTS: dict[str, str] = {
    "scheduler": "gpuyard-scheduler",
    "jobs": "gpuyard-controllers",
    "teams": "gpuyard-controllers",
    "balloons": "gpuyard-controllers",
    "teams-webhook": manifests.WEBHOOK,
    "health": "gpuyard-health",
    "health-agent": "gpuyard-health-agent",
    "dashboard": manifests.DASHBOARD,
    # the simulated nodes' network agents (gpuyard.cluster.simnetd)
    "netd": manifests.NETD,
    # not a component: the read-only identity the banner's dashboard link signs in as
    "viewer": manifests.VIEWER,
}
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
TOKEN_SECONDS = 48 * 3600
RENEW_EVERY = TOKEN_SECONDS / 4


def rbac_objects() -> list[dict[str, Any]]:
    """The namespace and every RBAC object of `gpuyard manifests`."""
    return [
        o
        for o in manifests.objects()
        if o.get("kind") in RBAC_KINDS
        or (o.get("kind") == "Namespace" and o["metadata"]["name"] == manifests.NAMESPACE)
    ]


async def install(client: Any) -> None:
    """Create the objects, or bring the roles back to what the manifests say."""
    for obj in rbac_objects():
        try:
            await client.create(obj)
        except AlreadyExists:
            if obj["kind"] in ("ServiceAccount", "Namespace"):
                continue
            md = obj["metadata"]
            have = await client.get(
                (obj["apiVersion"], obj["kind"]), md["name"], md.get("namespace")
            )
            want = {
                **obj,
                "metadata": {**md, "resourceVersion": have["metadata"]["resourceVersion"]},
            }
            await client.replace(want)


def token_path(data_dir: Path, sa: str) -> Path:
    return data_dir / "identities" / f"{sa}.token"


async def issue_tokens(client: Any, data_dir: Path) -> dict[str, str]:
    """A fresh token file per ServiceAccount; component -> token file path."""
    d = data_dir / "identities"
    d.mkdir(mode=0o700, exist_ok=True)
    out: dict[str, str] = {}
    done: dict[str, str] = {}
    for component, sa in SERVICE_ACCOUNTS.items():
        if sa not in done:
            tr = await client.request(
                "POST",
                f"/api/v1/namespaces/{manifests.NAMESPACE}/serviceaccounts/{sa}/token",
                body={
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {"expirationSeconds": TOKEN_SECONDS},
                },
            )
            path = token_path(data_dir, sa)
            pki.write_private(path, tr["status"]["token"].encode())
            done[sa] = str(path)
        out[component] = done[sa]
    return out


async def renew(client: Any, data_dir: Path, stop: asyncio.Event) -> None:
    """Replace every token file well before its token expires."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RENEW_EVERY)
        if stop.is_set():
            return
        try:
            await issue_tokens(client, data_dir)
        except KubeError as exc:
            log.warning("could not renew the components' tokens: %s", exc)
