"""Fixtures for the API server tests: `api`, an HTTP client for `apiserver_inproc`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from .api import Api


@pytest.fixture
async def api(apiserver_inproc: Any) -> AsyncIterator[Api]:
    srv = apiserver_inproc
    client = Api(srv.url, srv.token, ca_pem=srv.ca_pem)
    try:
        yield client
    finally:
        await client.close()
