"""Hostile clients for the load tests, run as separate processes (each has its own
file limit):

    python -m tests.apiserver.load_clients idle HOST PORT COUNT SECONDS
    python -m tests.apiserver.load_clients slow HOST PORT COUNT SECONDS CA_FILE

idle: holds COUNT TCP connections that never send a byte; one the server closes is
opened again half a second later, as an attacker would. slow: COUNT TLS clients that
send a request line and then one header line a second for SECONDS, never ending the
head. Each prints one JSON line of what happened when it is done (or on SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import ssl
import sys
import time
from typing import Any


class _Idle(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def idle(host: str, port: int, count: int, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stats = {"opened": 0, "closed_by_server": 0, "connect_failed": 0, "open": 0, "max_open": 0}
    stop = loop.time() + seconds
    opening = asyncio.Semaphore(256)  # do not overrun the listen backlog all at once

    async def hold() -> None:
        while loop.time() < stop:
            try:
                async with opening:
                    tr, proto = await asyncio.wait_for(
                        loop.create_connection(_Idle, host, port), 10
                    )
            except (OSError, TimeoutError):
                stats["connect_failed"] += 1
                await asyncio.sleep(0.5)
                continue
            stats["opened"] += 1
            stats["open"] += 1
            stats["max_open"] = max(stats["max_open"], stats["open"])
            try:
                await asyncio.wait_for(asyncio.shield(proto.lost), max(0.0, stop - loop.time()))
                stats["closed_by_server"] += 1
            except TimeoutError:
                pass
            finally:
                stats["open"] -= 1
                tr.abort()
            await asyncio.sleep(0.5)

    await asyncio.gather(*(hold() for _ in range(count)))
    return stats


async def slow(host: str, port: int, count: int, seconds: float, ca: str) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=ca)
    stats: dict[str, Any] = {"closed_by_server": 0, "completed": 0, "connect_failed": 0}
    held: list[float] = []

    async def one(i: int) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname=host), 30
            )
        except (OSError, TimeoutError, ssl.SSLError):
            stats["connect_failed"] += 1
            return
        t0 = time.monotonic()
        try:
            writer.write(f"GET /api/v1/namespaces HTTP/1.1\r\nHost: {host}\r\n".encode())
            for n in range(int(seconds)):
                await writer.drain()
                try:
                    got = await asyncio.wait_for(reader.read(1), 1.0)
                    if not got:  # the server closed the connection
                        raise ConnectionResetError
                except TimeoutError:
                    pass
                writer.write(f"X-Slow-{n}: {i}\r\n".encode())
            stats["completed"] += 1
        except (OSError, ssl.SSLError):
            stats["closed_by_server"] += 1
            held.append(time.monotonic() - t0)
        finally:
            writer.transport.abort()

    await asyncio.gather(*(one(i) for i in range(count)))
    held.sort()
    stats["held_s_max"] = round(held[-1], 2) if held else None
    return stats


async def _main(argv: list[str]) -> dict[str, Any]:
    mode, host, port, count, seconds = argv[0], argv[1], int(argv[2]), int(argv[3]), float(argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    task = asyncio.ensure_future(
        idle(host, port, count, seconds)
        if mode == "idle"
        else slow(host, port, count, seconds, argv[5])
    )
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return {"cancelled": True}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_main(sys.argv[1:]))), flush=True)
