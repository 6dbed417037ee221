"""Exec credential plugins (what EKS, GKE and AKS kubeconfigs use): a user's `exec`
stanza names a command whose standard output is an ExecCredential
(client.authentication.k8s.io/v1 or v1beta1) carrying a bearer token.

The plugin gets `KUBERNETES_EXEC_INFO` (an ExecCredential with spec.interactive false,
and spec.cluster when provideClusterInfo is set), the stanza's env on top of this
process's environment, no terminal on stdin. Its token is kept until its
expirationTimestamp (none: until the server answers 401), then the plugin runs again.
It runs without blocking the event loop; concurrent requests wait for one run.
A plugin may answer with a client certificate and key (clientCertificateData and
clientKeyData, PEM) instead of or beside a token: `generation` counts the certificates
it gave, and the client builds its TLS context again when it changes.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from gpuyard.kube.errors import ConfigError

API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
TIMEOUT_S = 60.0


def _parse_time(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError as e:
        raise ConfigError(f"exec plugin gave a bad expirationTimestamp {text!r}") from e


@dataclass
class ExecPlugin:
    command: str
    args: list[str]
    env: dict[str, str]
    api_version: str
    user: str
    install_hint: str = ""
    provide_cluster_info: bool = False
    cluster: dict[str, Any] = field(default_factory=dict)
    token: str | None = None
    expires_at: float | None = None  # wall clock
    runs: int = 0
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    generation: int = 0  # client certificates received so far
    _lock: asyncio.Lock | None = field(default=None, repr=False)
    _lock_loop: Any = field(default=None, repr=False)

    @classmethod
    def from_config(cls, spec: Any, base: Path, user: str) -> ExecPlugin:
        where = f"user {user!r}: exec"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a mapping")
        command = spec.get("command")
        if not command or not isinstance(command, str):
            raise ConfigError(f"{where}: command is required")
        api_version = str(spec.get("apiVersion") or "")
        if api_version not in API_VERSIONS:
            raise ConfigError(
                f"{where}: apiVersion {api_version!r} is not supported "
                f"(use one of {', '.join(API_VERSIONS)})"
            )
        mode = spec.get("interactiveMode") or ("" if api_version.endswith("v1beta1") else None)
        if mode is None:
            raise ConfigError(f"{where}: interactiveMode is required for {api_version}")
        if mode not in ("", "Never", "IfAvailable", "Always"):
            raise ConfigError(
                f"{where}: interactiveMode {mode!r} is not Never, IfAvailable or Always"
            )
        if mode == "Always":
            raise ConfigError(
                f"{where}: interactiveMode Always needs a terminal, which gpuyard's "
                "components never have"
            )
        args = spec.get("args") or []
        if not isinstance(args, list):
            raise ConfigError(f"{where}: args must be a list")
        env: dict[str, str] = {}
        for i, e in enumerate(spec.get("env") or []):
            if not isinstance(e, dict) or not e.get("name"):
                raise ConfigError(f"{where}: env[{i}] needs a name")
            env[str(e["name"])] = str(e.get("value") or "")
        if os.sep in command and not os.path.isabs(command):
            command = str(base / command)
        return cls(
            command=command,
            args=[str(a) for a in args],
            env=env,
            api_version=api_version,
            user=user,
            install_hint=str(spec.get("installHint") or ""),
            provide_cluster_info=bool(spec.get("provideClusterInfo")),
        )

    def expire(self) -> None:
        self.token = None
        self.cert_pem = self.key_pem = None
        self.expires_at = None

    def fresh(self) -> bool:
        have = self.token is not None or self.cert_pem is not None
        return have and (self.expires_at is None or time.time() < self.expires_at)

    def _exec_info(self) -> bytes:
        spec: dict[str, Any] = {"interactive": False}
        if self.provide_cluster_info:
            c = self.cluster
            info: dict[str, Any] = {"server": c.get("server", "")}
            for key, out in (
                ("tls-server-name", "tls-server-name"),
                ("insecure-skip-tls-verify", "insecure-skip-tls-verify"),
                ("certificate-authority-data", "certificate-authority-data"),
                ("proxy-url", "proxy-url"),
            ):
                if c.get(key):
                    info[out] = c[key]
            ext = c.get("extensions") or []
            for e in ext if isinstance(ext, list) else []:
                if isinstance(e, dict) and e.get("name") == "client.authentication.k8s.io/exec":
                    info["config"] = e.get("extension")
            spec["cluster"] = info
        return orjson.dumps(
            {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec}
        )

    async def ensure(self) -> None:
        if self.fresh():
            return
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            if not self.fresh():
                await self._run()

    async def _run(self) -> None:
        env = dict(os.environ)
        env.update(self.env)
        env["KUBERNETES_EXEC_INFO"] = self._exec_info().decode()
        what = f"exec plugin {self.command!r} of user {self.user!r}"
        try:
            proc = await asyncio.create_subprocess_exec(
                self.command,
                *self.args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            hint = f" ({self.install_hint.strip()})" if self.install_hint else ""
            raise ConfigError(f"cannot run {what}: {e.strerror or e}{hint}") from e
        try:
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
        except TimeoutError as e:
            proc.kill()
            await proc.wait()
            raise ConfigError(f"{what} did not answer within {TIMEOUT_S:g} s") from e
        self.runs += 1
        if proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise ConfigError(f"{what} failed with exit status {proc.returncode}: {tail[0]}")
        try:
            cred = orjson.loads(out)
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"{what} did not print an ExecCredential (not JSON)") from e
        if not isinstance(cred, dict) or cred.get("kind") != "ExecCredential":
            raise ConfigError(f"{what} did not print an ExecCredential")
        if cred.get("apiVersion") != self.api_version:
            raise ConfigError(
                f"{what} answered {cred.get('apiVersion')!r}, the kubeconfig asks for "
                f"{self.api_version!r}"
            )
        status = cred.get("status")
        if not isinstance(status, dict):
            raise ConfigError(f"{what}: the ExecCredential has no status")
        token = status.get("token")
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if bool(cert) != bool(key):
            raise ConfigError(
                f"{what}: the ExecCredential needs both clientCertificateData and "
                "clientKeyData, or neither"
            )
        if not token and not cert:
            raise ConfigError(f"{what}: the ExecCredential has no status.token or certificate")
        expires = status.get("expirationTimestamp")
        self.token = str(token) if token else None
        if cert:
            self.cert_pem, self.key_pem = str(cert).encode(), str(key).encode()
            self.generation += 1
        self.expires_at = _parse_time(str(expires)) if expires else None
