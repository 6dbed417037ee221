"""Hostile clients for the load tests, run as separate processes (each has its own
file limit):

    python -m tests.apiserver.load_clients idle HOST PORT COUNT SECONDS
    python -m tests.apiserver.load_clients slow HOST PORT COUNT SECONDS CA_FILE

idle: holds COUNT TCP connections that never send a byte; one the server closes is
opened again a second later, as an attacker would. slow: COUNT TLS clients that each
send a request line and then one header line a second for up to 30 s, never ending
the head; one the server cuts off connects again and starts over. Both keep at it
until SIGTERM (or SECONDS, a bound so that a helper never outlives its test for
long), then print one JSON line of what happened.
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

REOPEN_S = 1.0  # how long a cut-off client waits before it connects again
TRICKLE_S = 30  # how long a slow client keeps sending header lines


class _Idle(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def idle(host: str, port: int, count: int, stats: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stats.update(opened=0, closed_by_server=0, connect_failed=0, open=0, max_open=0)
    opening = asyncio.Semaphore(256)  # do not overrun the listen backlog all at once

    async def hold() -> None:
        while True:
            try:
                async with opening:
                    tr, proto = await asyncio.wait_for(
                        loop.create_connection(_Idle, host, port), 10
                    )
            except (OSError, TimeoutError):
                stats["connect_failed"] += 1
                await asyncio.sleep(REOPEN_S)
                continue
            stats["opened"] += 1
            stats["open"] += 1
            stats["max_open"] = max(stats["max_open"], stats["open"])
            try:
                await asyncio.shield(proto.lost)
                stats["closed_by_server"] += 1
            finally:
                stats["open"] -= 1
                tr.abort()
            await asyncio.sleep(REOPEN_S)

    await asyncio.gather(*(hold() for _ in range(count)))


async def slow(host: str, port: int, count: int, ca: str, stats: dict[str, Any]) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    stats.update(closed_by_server=0, completed=0, connect_failed=0, held_s_max=0.0)

    async def once(i: int) -> None:
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
            for n in range(TRICKLE_S):
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
            stats["held_s_max"] = round(max(stats["held_s_max"], time.monotonic() - t0), 2)
        finally:
            writer.transport.abort()

    async def one(i: int) -> None:
        while True:
            await once(i)
            await asyncio.sleep(REOPEN_S)

    await asyncio.gather(*(one(i) for i in range(count)))


async def _main(argv: list[str]) -> dict[str, Any]:
    mode, host, port, count, seconds = argv[0], argv[1], int(argv[2]), int(argv[3]), float(argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stats: dict[str, Any] = {}
    task = asyncio.ensure_future(
        idle(host, port, count, stats)
        if mode == "idle"
        else slow(host, port, count, argv[5], stats)
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    loop.call_later(seconds, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    return stats


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_main(sys.argv[1:]))), flush=True)
