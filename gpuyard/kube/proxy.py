"""Which HTTP proxy a client goes through, and the CONNECT tunnel through it.

`proxy_for(server, proxy_url)` follows kubectl: a cluster's `proxy-url` is used for
every request; else the environment's `HTTPS_PROXY` (for https servers) or
`HTTP_PROXY` (for http ones), upper case before lower case, unless `NO_PROXY` names
the host. As in kubectl, localhost and loopback addresses never use the
environment's proxy. NO_PROXY entries: `*` (everything), an IP address or CIDR, a
domain (`example.com` matches it and its subdomains, `.example.com` only the
subdomains), any of them with `:port` to match only that port.

Proxies are spoken to in plain HTTP (`http://[user:password@]host:port`); requests to
https servers go through a CONNECT tunnel (`open_tunnel`), so TLS runs end to end;
requests to plain http servers are sent to the proxy in absolute form.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import socket
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from gpuyard.kube.errors import ConfigError

MAX_REPLY = 16384


def _env(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name.upper()) or environ.get(name.lower()) or ""


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether NO_PROXY says to reach host:port directly."""
    host = host.lower().strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        try:  # a CIDR or an address
            net = ipaddress.ip_network(entry.strip("[]"), strict=False)
            if ip is not None and ip in net:
                return True
            continue
        except ValueError:
            pass
        want_port = None
        h, sep, p = entry.rpartition(":")
        if sep and p.isdigit() and "]" not in p:
            entry, want_port = h, int(p)
        if want_port is not None and want_port != port:
            continue
        entry = entry.strip("[]")
        if ip is not None:
            try:
                if ipaddress.ip_address(entry) == ip:
                    return True
            except ValueError:
                pass
            continue
        if entry.startswith("."):
            if host.endswith(entry):
                return True
        elif host == entry or host.endswith("." + entry):
            return True
    return False


def proxy_for(
    server: str, proxy_url: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The proxy URL for requests to `server`, or None to connect directly."""
    u = urlsplit(server)
    host = u.hostname or ""
    port = u.port or (443 if u.scheme == "https" else 80)
    if proxy_url:
        chosen = proxy_url
    else:
        env = os.environ if environ is None else environ
        chosen = _env(env, "https_proxy" if u.scheme == "https" else "http_proxy")
        if not chosen or _loopback(host) or bypassed(host, port, _env(env, "no_proxy")):
            return None
    if "://" not in chosen:
        chosen = "http://" + chosen
    p = urlsplit(chosen)
    if p.scheme != "http" or not p.hostname:
        raise ConfigError(f"proxy {chosen!r}: only http:// proxies are supported")
    return chosen


def proxy_parts(proxy: str) -> tuple[str, int, str | None]:
    """(host, port, Proxy-Authorization value or None) of a proxy URL."""
    p = urlsplit(proxy)
    auth = None
    if p.username is not None:
        cred = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
        auth = "Basic " + base64.b64encode(cred).decode()
    return p.hostname or "", p.port or 80, auth


async def open_tunnel(proxy: str, host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A connected socket to host:port through the proxy's CONNECT (not yet TLS)."""
    loop = asyncio.get_running_loop()
    phost, pport, auth = proxy_parts(proxy)
    infos = await loop.getaddrinfo(phost, pport, type=socket.SOCK_STREAM)
    if not infos:
        raise ConnectionError(f"proxy {phost}:{pport} does not resolve")
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, addr)
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
            if auth:
                head += f"Proxy-Authorization: {auth}\r\n"
            await loop.sock_sendall(sock, (head + "\r\n").encode("latin-1"))
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    raise ConnectionError(f"proxy {phost}:{pport} closed the connection")
                reply += chunk
                if len(reply) > MAX_REPLY:
                    raise ConnectionError(f"proxy {phost}:{pport} sent an oversized reply")
        status_line = reply.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] != "200":
            raise ConnectionError(f"proxy {phost}:{pport} refused CONNECT {target}: {status_line}")
        if reply.index(b"\r\n\r\n") + 4 != len(reply):
            raise ConnectionError(f"proxy {phost}:{pport} sent bytes after its CONNECT reply")
        return sock
    except BaseException:
        sock.close()
        raise
