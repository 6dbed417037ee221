"""Connection settings for a Kubernetes API: kubeconfig files and in-cluster config.

`load_kubeconfig(path=None, context=None)` reads a kubeconfig (explicit path, else
every file of `$KUBECONFIG` merged as kubectl merges them, else `~/.kube/config`),
picks the current (or named) context and returns a `ConnectionConfig`: server URL,
bearer token, client certificate, CA and TLS settings, proxy, default namespace.
`in_cluster_config()` reads the service-account environment of a pod. `load_config()`
tries both in the usual order. `ssl_context()` turns the TLS settings into an
`ssl.SSLContext`.

Merging (`merge_kubeconfigs`): files in order; the first file to name a cluster, user
or context wins for that name (entries are not mixed), the first to set
current-context wins, preferences and extensions are merged key by key (first wins).
Relative paths are resolved against the folder of the file that holds them. Missing
files are skipped.

Credentials: a token, a `tokenFile` (re-read when the file changes: service-account
tokens rotate), basic auth, client certificates, or an exec plugin
(`gpuyard.kube.execcred`, client.authentication.k8s.io v1 and v1beta1).
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuyard.k8s.decode import DecodeError, loads_yaml
from gpuyard.kube.errors import ConfigError
from gpuyard.kube.execcred import ExecPlugin

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass
class ConnectionConfig:
    """Where and how to reach one API server."""

    server: str
    token: str | None = None
    token_file: str | None = None
    ca_data: bytes | None = None  # PEM
    ca_file: str | None = None
    client_cert_data: bytes | None = None  # PEM
    client_cert_file: str | None = None
    client_key_data: bytes | None = None  # PEM
    client_key_file: str | None = None
    insecure_skip_tls_verify: bool = False
    namespace: str = "default"
    username: str | None = None
    password: str | None = None
    context: str | None = None
    proxy_url: str | None = None  # a cluster's proxy-url; else the environment's
    tls_server_name: str | None = None  # the name to check the server's certificate for
    exec_plugin: ExecPlugin | None = None
    _file_token: str | None = field(default=None, repr=False, compare=False)
    _token_stamp: tuple[int, int, int] | None = field(default=None, repr=False, compare=False)

    def bearer_token(self) -> str | None:
        """The token; a token_file is re-read when it changes (service-account tokens
        rotate); an exec plugin's token once `refresh()` has run it."""
        if self.exec_plugin is not None and self.exec_plugin.token:
            return self.exec_plugin.token
        if self.token_file:
            try:
                st = os.stat(self.token_file)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if stamp != self._token_stamp:
                    self._file_token = Path(self.token_file).read_text().strip()
                    self._token_stamp = stamp
                return self._file_token
            except OSError as e:
                raise ConfigError(f"cannot read token file {self.token_file}: {e}") from e
        return self.token

    async def refresh(self) -> None:
        """Make credentials current: run the exec plugin if its token is missing or
        expired (a no-op otherwise)."""
        if self.exec_plugin is not None:
            await self.exec_plugin.ensure()

    def unauthorized(self) -> bool:
        """The server answered 401: drop credentials that can be renewed. True when
        a retry may help (an exec plugin will run again)."""
        if self.exec_plugin is not None:
            self.exec_plugin.expire()
            return True
        if self.token_file:
            self._token_stamp = None  # read it again
            return True
        return False

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS settings for https servers; None for plain http."""
        if not self.server.startswith("https"):
            return None
        ctx = ssl.create_default_context()
        if self.insecure_skip_tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data:
            ctx = ssl.create_default_context(cadata=self.ca_data.decode())
        elif self.ca_file:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        cert_file, key_file = self.client_cert_file, self.client_key_file
        cert_data, key_data = self.client_cert_data, self.client_key_data
        plugin = self.exec_plugin
        if plugin is not None and plugin.cert_pem:
            cert_data, key_data = plugin.cert_pem, plugin.key_pem
        if cert_data or key_data:
            # ssl wants files; write the PEMs into private temporary files.
            cert_file = _private_tempfile(cert_data or b"")
            key_file = _private_tempfile(key_data or b"")
        if cert_file:
            try:
                ctx.load_cert_chain(cert_file, key_file)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"cannot load client certificate: {e}") from e
            finally:
                if cert_data or key_data:
                    for f in (cert_file, key_file):
                        if f:
                            os.unlink(f)
        return ctx


def _private_tempfile(data: bytes) -> str:
    fd, name = tempfile.mkstemp(prefix="gpuyard-kube-", suffix=".pem")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return name


def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=False)
    except ValueError as e:
        raise ConfigError(f"{what} is not valid base64") from e


def _named(items: Any, name: str, what: str) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            body = item.get(what)
            return body if isinstance(body, dict) else {}
    raise ConfigError(f"kubeconfig has no {what} named {name!r}")


def _resolve(path: Any, base: Path) -> str | None:
    if not path:
        return None
    p = Path(os.path.expanduser(str(path)))
    return str(p if p.is_absolute() else base / p)


_PATH_FIELDS = {
    "clusters": ("certificate-authority",),
    "users": ("client-certificate", "client-key", "tokenFile"),
}


def _absolute(doc: dict[str, Any], base: Path) -> dict[str, Any]:
    """The document with the relative paths of its entries made absolute."""
    for section, fields in _PATH_FIELDS.items():
        for item in doc.get(section) or []:
            body = item.get(section[:-1]) if isinstance(item, dict) else None
            if not isinstance(body, dict):
                continue
            for f in fields:
                if body.get(f):
                    body[f] = _resolve(body[f], base)
            ex = body.get("exec") if section == "users" else None
            if isinstance(ex, dict) and ex.get("command"):
                cmd = str(ex["command"])
                if os.sep in cmd and not os.path.isabs(cmd):
                    ex["command"] = str(base / cmd)
    return doc


def _read_doc(p: Path) -> dict[str, Any]:
    try:
        text = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read kubeconfig {p}: {e.strerror or e}") from e
    try:
        doc = loads_yaml(text)
    except DecodeError as e:
        raise ConfigError(f"kubeconfig {p} is not valid YAML: {e.message}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {p} is not a mapping")
    return _absolute(doc, p.parent)


def merge_kubeconfigs(paths: list[Path]) -> dict[str, Any]:
    """One kubeconfig document from several files, merged as kubectl merges them."""
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config"}
    named: dict[str, dict[str, Any]] = {"clusters": {}, "users": {}, "contexts": {}}
    maps: dict[str, dict[str, Any]] = {"preferences": {}, "extensions": {}}
    for p in paths:
        if not p.exists():
            continue
        doc = _read_doc(p)
        if doc.get("current-context") and "current-context" not in merged:
            merged["current-context"] = doc["current-context"]
        for section, seen in named.items():
            for item in doc.get(section) or []:
                if isinstance(item, dict) and item.get("name") and item["name"] not in seen:
                    seen[item["name"]] = item
        for section, into in maps.items():
            value = doc.get(section)
            if section == "extensions" and isinstance(value, list):
                for ext in value:
                    if isinstance(ext, dict) and ext.get("name"):
                        into.setdefault(ext["name"], ext)
            elif isinstance(value, dict):
                for key, v in value.items():
                    into.setdefault(key, v)
    for section, seen in named.items():
        merged[section] = list(seen.values())
    merged["preferences"] = maps["preferences"]
    if maps["extensions"]:
        merged["extensions"] = list(maps["extensions"].values())
    return merged


def kubeconfig_paths() -> list[Path]:
    """The files of $KUBECONFIG (in order, duplicates dropped), else ~/.kube/config."""
    env = os.environ.get("KUBECONFIG")
    if env:
        out: list[Path] = []
        for part in env.split(os.pathsep):
            if part and Path(part) not in out:
                out.append(Path(part))
        if out:
            return out
    return [Path.home() / ".kube" / "config"]


def default_kubeconfig_path() -> Path:
    env = os.environ.get("KUBECONFIG")
    if env:
        for part in env.split(os.pathsep):
            if part and Path(part).exists():
                return Path(part)
        first = next((p for p in env.split(os.pathsep) if p), None)
        if first:
            return Path(first)
    return Path.home() / ".kube" / "config"


def parse_kubeconfig(
    doc: dict[str, Any], context: str | None = None, base_dir: Path | None = None
) -> ConnectionConfig:
    """Pick a context from a parsed kubeconfig document. Relative file paths are
    resolved against `base_dir` (the kubeconfig's folder)."""
    if not isinstance(doc, dict):
        raise ConfigError("kubeconfig is not a mapping")
    base = base_dir or Path.cwd()
    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise ConfigError("kubeconfig has no current-context and none was given")
    ctx = _named(doc.get("contexts"), ctx_name, "context")
    cluster_name = ctx.get("cluster")
    if not cluster_name:
        raise ConfigError(f"context {ctx_name!r} names no cluster")
    cluster = _named(doc.get("clusters"), cluster_name, "cluster")
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"cluster {cluster_name!r} has no server")
    user: dict[str, Any] = {}
    if ctx.get("user"):
        user = _named(doc.get("users"), ctx["user"], "user")
    cfg = ConnectionConfig(
        server=str(server).rstrip("/"),
        namespace=str(ctx.get("namespace") or "default"),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        context=str(ctx_name),
    )
    if cluster.get("certificate-authority-data"):
        cfg.ca_data = _b64(cluster["certificate-authority-data"], "certificate-authority-data")
    cfg.ca_file = _resolve(cluster.get("certificate-authority"), base)
    if user.get("token"):
        cfg.token = str(user["token"])
    cfg.token_file = _resolve(user.get("tokenFile"), base)
    if user.get("client-certificate-data"):
        cfg.client_cert_data = _b64(user["client-certificate-data"], "client-certificate-data")
    if user.get("client-key-data"):
        cfg.client_key_data = _b64(user["client-key-data"], "client-key-data")
    cfg.client_cert_file = _resolve(user.get("client-certificate"), base)
    cfg.client_key_file = _resolve(user.get("client-key"), base)
    if user.get("username"):
        cfg.username = str(user["username"])
        cfg.password = str(user.get("password") or "")
    if cluster.get("proxy-url"):
        cfg.proxy_url = str(cluster["proxy-url"])
    if cluster.get("tls-server-name"):
        cfg.tls_server_name = str(cluster["tls-server-name"])
    if user.get("exec"):
        cfg.exec_plugin = ExecPlugin.from_config(user["exec"], base, str(ctx.get("user")))
        cfg.exec_plugin.cluster = cluster
    elif user.get("auth-provider"):
        if not (cfg.token or cfg.token_file or cfg.client_cert_data or cfg.client_cert_file):
            raise ConfigError(
                f"user {ctx.get('user')!r} uses an auth-provider, which kubectl removed "
                "(use an exec plugin, a token or a client certificate)"
            )
    return cfg


def load_kubeconfig(path: str | Path | None = None, context: str | None = None) -> ConnectionConfig:
    """Read a kubeconfig (path, else the files of $KUBECONFIG merged, else
    ~/.kube/config)."""
    if path:
        p = Path(path)
        return parse_kubeconfig(_read_doc(p), context, p.parent)
    paths = kubeconfig_paths()
    if not any(p.exists() for p in paths):
        names = os.pathsep.join(str(p) for p in paths)
        raise ConfigError(f"cannot read kubeconfig {names}: No such file or directory")
    return parse_kubeconfig(merge_kubeconfigs(paths), context)


def in_cluster_config(sa_dir: Path = SA_DIR) -> ConnectionConfig:
    """Settings for a pod's service account (KUBERNETES_SERVICE_HOST/PORT + token)."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConfigError("not running in a cluster: KUBERNETES_SERVICE_HOST is not set")
    token_file = sa_dir / "token"
    if not token_file.exists():
        raise ConfigError(f"service-account token {token_file} does not exist")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    ns_file = sa_dir / "namespace"
    ca_file = sa_dir / "ca.crt"
    return ConnectionConfig(
        server=f"https://{host}:{port}",
        token_file=str(token_file),
        ca_file=str(ca_file) if ca_file.exists() else None,
        namespace=ns_file.read_text().strip() if ns_file.exists() else "default",
    )


def load_config(path: str | Path | None = None, context: str | None = None) -> ConnectionConfig:
    """An explicit path wins; else in-cluster when in a pod; else $KUBECONFIG / ~/.kube/config."""
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST") and SA_DIR.exists():
        return in_cluster_config()
    return load_kubeconfig(path, context)
