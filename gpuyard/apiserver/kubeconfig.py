"""Writing the kubeconfig file that lets clients (kubectl, gpuyard.kube) reach the server."""

from __future__ import annotations

import base64
import os
import secrets

import yaml


def new_token() -> str:
    return secrets.token_urlsafe(32)


def kubeconfig_dict(
    url: str, token: str, name: str = "gpuyard", ca_pem: bytes | None = None
) -> dict[str, object]:
    cluster: dict[str, str] = {"server": url}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}
        ],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(
    path: str, url: str, token: str, name: str = "gpuyard", ca_pem: bytes | None = None
) -> str:
    """Write (atomically, mode 0600) a kubeconfig with context `name`; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    text = yaml.safe_dump(kubeconfig_dict(url, token, name, ca_pem), sort_keys=False)
    try:
        with open(path) as f:
            same = f.read() == text
        if same and not os.stat(path).st_mode & 0o077:
            return path  # unchanged: no write (a restart on a full disk needs none)
    except OSError:
        pass
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def read_token(path: str) -> str | None:
    """The token of an existing kubeconfig (so a restarted server keeps its token)."""
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
        for u in cfg.get("users") or []:
            tok = (u.get("user") or {}).get("token")
            if tok:
                return str(tok)
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return None
