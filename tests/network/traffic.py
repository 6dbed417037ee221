"""Run as a script inside a namespace: ``serve ADDR PORT`` (count bytes until EOF, print) or
``send ADDR PORT BYTES [SRC]`` (TCP, then print what was sent)."""

import socket
import sys
import time


def serve(addr: str, port: int) -> None:
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept()
    n = 0
    while chunk := c.recv(1 << 16):
        n += len(chunk)
    print(n, flush=True)


def send(addr: str, port: int, total: int, src: str = "") -> None:
    c = socket.create_connection((addr, port), timeout=30, source_address=(src, 0) if src else None)
    buf = b"x" * (1 << 16)
    left = total
    t0 = time.monotonic()
    while left > 0:
        left -= c.send(buf[: min(left, len(buf))])
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
    c.close()
    print(total, time.monotonic() - t0, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:6])
