"""Fixtures for the API server tests: `api`, an HTTP client for `apiserver_inproc`;
`official_client`, the official kubernetes client's ApiClient for `apiserver` (the
subprocess server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kubernetes import client, config

from .api import Api


@pytest.fixture
async def api(apiserver_inproc: Any) -> AsyncIterator[Api]:
    srv = apiserver_inproc
    client = Api(srv.url, srv.token, ca_pem=srv.ca_pem)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def official_client(apiserver: Any) -> Iterator[client.ApiClient]:
    c = config.new_client_from_config(config_file=apiserver.kubeconfig)
    try:
        yield c
    finally:
        c.close()
