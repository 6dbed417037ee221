"""Fixtures for end-to-end tests on `gpuyard up`.

- `cluster`: `gpuyard up` in a subprocess, 4 nodes, short lease (1 s) and node grace
  (3 s), all components that are available. Yields a
  `gpuyard.cluster.testing.ClusterProcess` (`.kubeconfig`, `.kubectl(...)`,
  `.client()`, `.fault(kind, node)`, `.data_dir`, `.log()`); killed at the end.
- `make_cluster(nodes=..., args=[...])`: the same with your own size and flags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuyard.cluster.testing import ClusterProcess, start_cluster_process

FAST = ["--lease-seconds", "1", "--node-grace", "3", "--start-delay", "0.2"]


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., ClusterProcess]]:
    started: list[ClusterProcess] = []

    def make(nodes: int = 4, args: list[str] | None = None, **kw: Any) -> ClusterProcess:
        c = start_cluster_process(
            tmp_path / f"c{len(started)}", nodes, [*FAST, *(args or [])], **kw
        )
        started.append(c)
        return c

    try:
        yield make
    finally:
        for c in started:
            c.kill()


@pytest.fixture
def cluster(make_cluster: Callable[..., ClusterProcess]) -> ClusterProcess:
    return make_cluster()
