"""The informer's cache and its indexes (pure data structure)."""

from __future__ import annotations

from gpuyard.kube.informer import Cache


def pod(name: str, ns: str = "default", node: str = "", rv: str = "1", team: str = "") -> dict:
    p: dict = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "labels": {}},
        "spec": {},
    }
    if node:
        p["spec"]["nodeName"] = node
    if team:
        p["metadata"]["labels"]["team"] = team
    return p


def names(objs: list[dict]) -> list[str]:
    return [o["metadata"]["name"] for o in objs]


def test_namespace_and_node_indexes_follow_updates_and_removals() -> None:
    c = Cache()
    c.put(pod("a", "ns1", "n1"))
    c.put(pod("b", "ns1"))
    c.put(pod("c", "ns2", "n1"))
    assert names(c.by_index("namespace", "ns1")) == ["a", "b"]
    assert names(c.by_index("node", "n1")) == ["a", "c"]
    # b gets bound: moves into the node index
    old = c.put(pod("b", "ns1", "n2", rv="2"))
    assert old is not None and old["metadata"]["resourceVersion"] == "1"
    assert names(c.by_index("node", "n2")) == ["b"]
    # a moves nodes: leaves n1
    c.put(pod("a", "ns1", "n2", rv="3"))
    assert names(c.by_index("node", "n1")) == ["c"]
    assert c.remove("ns2/c") is not None
    assert c.by_index("node", "n1") == []
    assert "n1" not in c.index_values("node")
    assert c.remove("ns2/c") is None
    assert len(c) == 2


def test_custom_index_added_late_covers_existing_objects() -> None:
    c = Cache()
    c.put(pod("a", team="vision"))
    c.put(pod("b", team="lang"))
    c.put(pod("c"))
    c.add_index("team", lambda o: o["metadata"]["labels"].get("team"))
    assert names(c.by_index("team", "vision")) == ["a"]
    c.put(pod("c", team="vision", rv="2"))
    assert names(c.by_index("team", "vision")) == ["a", "c"]
    # multi-valued index functions
    c.add_index("letters", lambda o: list(o["metadata"]["name"] * 2))
    assert names(c.by_index("letters", "b")) == ["b"]


def test_replace_all_rebuilds_indexes() -> None:
    c = Cache()
    c.put(pod("a", node="n1"))
    c.replace_all([pod("x", node="n2"), {"metadata": {"name": "node-1"}}])
    assert c.by_index("node", "n1") == []
    assert names(c.by_index("node", "n2")) == ["x"]
    assert c.get("node-1") is not None  # cluster-scoped key is the bare name
    try:
        c.by_index("nope", "x")
    except KeyError as e:
        assert "nope" in str(e)
    else:
        raise AssertionError("unknown index must raise")


async def test_split_lines_handles_any_chunking_and_long_lines() -> None:
    from gpuyard.kube.transport import split_lines

    lines = [b'{"a":1}', b"x" * 300_000, b'{"b":2}', b"last-without-newline"]
    data = b"\n".join(lines) + b"\n\n"
    data = data[:-2]  # the final line has no newline
    for size in (7, 4096, 65536, len(data)):

        async def chunks(size: int = size):  # type: ignore[no-untyped-def]
            for i in range(0, len(data), size):
                yield data[i : i + size]

        got = [line async for line in split_lines(chunks())]
        assert got == lines, size


def test_an_update_keeps_unchanged_index_values_and_moves_changed_ones() -> None:
    c = Cache()
    c.add_index("teams", lambda o: sorted(o["metadata"]["labels"].get("team", "").split()))
    c.put(pod("a", node="n1", team="vision lang"))
    c.put(pod("a", node="n1", team="vision lang", rv="2"))  # same values, a new version
    assert c.by_index("node", "n1")[0]["metadata"]["resourceVersion"] == "2"
    assert names(c.by_index("teams", "lang")) == ["a"]
    c.put(pod("a", node="n1", team="vision", rv="3"))  # one value of a list goes
    assert c.index_values("teams") == ["vision"]
    c.put(pod("a", team="vision", rv="4"))  # unbound: leaves its node
    assert c.index_values("node") == []
    assert names(c.by_index("namespace", "default")) == ["a"]
