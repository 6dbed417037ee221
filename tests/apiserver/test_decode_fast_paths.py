"""The decoder's and validator's shortcuts for values they have seen valid (plain
strings and booleans, maps and lists of them, quantities, label keys and values) take
nothing away: after many valid pods have filled them, a body with a wrong type or a
bad value in exactly those places is still refused, naming the field."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gpuyard.apiserver.server import APIServer

PODS = "/api/v1/namespaces/default/pods"
H = {"Content-Type": "application/json"}


def _pod(name: str, **over: Any) -> dict[str, Any]:
    c = {
        "name": "main",
        "image": "trainer:latest",
        "resources": {"requests": {"cpu": "10", "nvidia.com/gpu": "1"}},
    }
    c.update(over.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "train", "team": "a"}, **over},
        "spec": {"schedulerName": "gpuyard-scheduler", "containers": [c]},
    }


@pytest.fixture
async def srv() -> Any:
    s = APIServer(None, tls=False)
    await s.start()
    try:
        for i in range(50):  # the shortcuts learn these values
            r = await s.dispatch("POST", PODS, headers=H, body=orjson.dumps(_pod(f"ok-{i}")))
            assert r.status == 201, r.body
        yield s
    finally:
        await s.stop()


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (_pod("b1", labels={"app": 5}), 400, ["cannot unmarshal number", "labels", "string"]),
        (_pod("b2", container={"image": 7}), 400, ["cannot unmarshal number", "image"]),
        (_pod("b3", container={"name": ["main"]}), 400, ["cannot unmarshal array", "name"]),
        (
            _pod("b4", container={"resources": {"requests": {"cpu": "10x"}}}),
            400,
            ["quantities must match"],
        ),
        (_pod("b5", labels={"-app": "train"}), 422, ["name part must consist of"]),
        (_pod("b6", labels={"app": "train!"}), 422, ["a valid label must be"]),
        (_pod("b7", labels={"app": "t" * 64}), 422, ["must be no more than 63 characters"]),
    ],
)
async def test_values_near_known_good_ones_are_still_refused(
    srv: APIServer, body: dict[str, Any], status: int, words: list[str]
) -> None:
    r = await srv.dispatch("POST", PODS, headers=H, body=orjson.dumps(body))
    assert r.status == status, r.body
    msg = orjson.loads(r.body)["message"]
    for w in words:
        assert w in msg, (w, msg)
    name = body["metadata"]["name"]
    assert (await srv.dispatch("GET", f"{PODS}/{name}")).status == 404


async def test_a_spec_seen_valid_is_still_judged_whole(srv: APIServer) -> None:
    """The fixture's pods all sent one spec, remembered as clean by the decoder and the
    validator; that spec with one more member, or a second container of the same name,
    is refused, and a refused spec is refused again (only clean ones are remembered)."""
    base = _pod("x")["spec"]
    unknown = {**base, "shedulerName": "typo"}
    twice = {**base, "containers": base["containers"] * 2}
    bad_type = {**base, "containers": [{**base["containers"][0], "image": 7}]}
    cases = [(unknown, 400, "unknown field"), (twice, 422, "Duplicate value")]
    cases += [(bad_type, 400, "cannot unmarshal number"), (bad_type, 400, "cannot unmarshal")]
    strict = {"fieldValidation": "Strict"}
    for i, (spec, status, words) in enumerate(cases):
        body = orjson.dumps({**_pod(f"y{i}"), "spec": spec})
        r = await srv.dispatch("POST", PODS, strict, headers=H, body=body)
        assert r.status == status, r.body
        assert words in orjson.loads(r.body)["message"]
    # warned about and dropped when the request does not ask for strictness
    body = orjson.dumps({**_pod("warned"), "spec": unknown})
    r = await srv.dispatch("POST", PODS, headers=H, body=body)
    assert r.status == 201 and "spec.shedulerName" in r.headers.get("Warning", ""), r.headers
    assert "shedulerName" not in orjson.loads(r.body)["spec"]
    r = await srv.dispatch("POST", PODS, headers=H, body=orjson.dumps(_pod("again")))
    assert r.status == 201, r.body  # the known spec itself still passes
    got = orjson.loads((await srv.dispatch("GET", f"{PODS}/again")).body)
    assert got["spec"]["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
