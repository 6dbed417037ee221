"""The node agent over simulated host directories: one write per change, none when
healthy; Xid 79, disk-full and recovery; restart without rewriting."""

from __future__ import annotations

from pathlib import Path

from gpuyard.health.agent import AgentConfig, SimAgents, health_from_node
from gpuyard.health.verdict import VerdictConfig, conditions_patch
from gpuyard.health.xid import format_xid_line

from .hostfiles import RecordingWriter, make_host, write_disk, write_gpus


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


CFG = AgentConfig(interval_s=10, verdict=VerdictConfig(quiet_s=60))


async def test_healthy_nodes_write_once_then_never(tmp_path: Path) -> None:
    for i in range(3):
        make_host(tmp_path, f"node-{i}")
    w, clock = RecordingWriter(), Clock()
    agents = SimAgents(tmp_path, w, CFG, clock)
    await agents.tick_all()
    assert sorted(n for n, _ in w.writes) == ["node-0", "node-1", "node-2"]
    assert all(len(c) == 3 and all(x.status == "True" for x in c) for _, c in w.writes)
    w.clear()
    for _ in range(360):  # an hour at 10 s
        clock.t += 10
        await agents.tick_all()
    assert w.writes == [] and w.events == []


async def test_xid79_then_disk_full_and_recovery(tmp_path: Path) -> None:
    h0 = make_host(tmp_path, "node-0")
    h1 = make_host(tmp_path, "node-1")
    w, clock = RecordingWriter(), Clock()
    agents = SimAgents(tmp_path, w, CFG, clock)
    await agents.tick_all()
    w.clear()
    with open(h0 / "kern.log", "a") as f:
        f.write(format_xid_line("0000:13:00", 79, "GPU has fallen off the bus.", 55.0) + "\n")
    write_disk(h1, free=1 << 20)
    clock.t += 10
    await agents.tick_all()
    got = {(n, c.type, c.status, c.reason) for n, cs in w.writes for c in cs}
    assert got == {
        ("node-0", "GPUHealthy", "False", "Xid79"),
        ("node-1", "DiskHealthy", "False", "DiskFull"),
    }
    gpu_msg = next(c.message for n, cs in w.writes for c in cs if n == "node-0")
    assert gpu_msg.startswith("fatal: ") and "0000:13:00" in gpu_msg
    assert {(n, e.reason) for n, e in w.events} == {
        ("node-0", "GPUUnhealthy"),
        ("node-1", "DiskUnhealthy"),
    }
    w.clear()
    write_disk(h1, free=500 << 30)  # space freed
    for _ in range(5):
        clock.t += 10
        await agents.tick_all()
    assert w.writes == []  # still within the quiet period; Xid 79 stays latched
    for _ in range(3):
        clock.t += 10
        await agents.tick_all()
    assert [(n, [(c.type, c.status) for c in cs]) for n, cs in w.writes] == [
        ("node-1", [("DiskHealthy", "True")])
    ]
    # A new boot (the log starts over) clears the latched Xid after the quiet period.
    w.clear()
    (h0 / "kern.log").write_text("[    1.0] Linux version\n")
    for _ in range(8):
        clock.t += 10
        await agents.tick_all()
    assert [(n, [(c.type, c.status) for c in cs]) for n, cs in w.writes] == [
        ("node-0", [("GPUHealthy", "True")])
    ]


async def test_lost_gpu_and_missing_file(tmp_path: Path) -> None:
    h = make_host(tmp_path, "node-0", gpus=2)
    w, clock = RecordingWriter(), Clock()
    agents = SimAgents(tmp_path, w, CFG, clock)
    await agents.tick_all()
    w.clear()
    write_gpus(h, [{"index": 0}, {"index": 1, "present": False}])
    clock.t += 10
    await agents.tick_all()
    assert [(c.reason, c.message) for _, cs in w.writes for c in cs] == [
        ("GPUCountMismatch", "1 of 2 GPUs visible (lost: 1)")
    ]
    w.clear()
    (h / "disk.json").write_text("{ half written")  # bad file: last good value kept
    clock.t += 10
    await agents.tick_all()
    assert w.writes == []


async def test_restart_seeds_from_node_and_writes_nothing(tmp_path: Path) -> None:
    h = make_host(tmp_path, "node-0")
    w, clock = RecordingWriter(), Clock()
    agents = SimAgents(tmp_path, w, CFG, clock)
    with open(h / "kern.log", "a") as f:
        f.write(format_xid_line("0000:13:00", 79, "GPU has fallen off the bus.") + "\n")
    # (from_end tail: history before start is not re-read)
    await agents.tick_all()
    node = {
        "metadata": {"name": "node-0"},
        "status": {"conditions": conditions_patch(w.writes[0][1], "2026-01-01T00:00:00Z")},
    }
    with open(h / "kern.log", "a") as f:
        f.write(format_xid_line("0000:13:00", 79, "GPU has fallen off the bus.") + "\n")
    clock.t += 10
    await agents.tick_all()
    assert w.writes[-1][1][0].reason == "Xid79"
    node["status"]["conditions"] = conditions_patch(
        w.writes[-1][1], "2026-01-01T00:00:10Z", node["status"]["conditions"]
    )

    async def seed() -> dict:  # type: ignore[type-arg]
        return {"node-0": node}

    w2 = RecordingWriter()
    restarted = SimAgents(tmp_path, w2, CFG, clock, seed=seed)
    for _ in range(20):
        clock.t += 10
        await restarted.tick_all()
    assert w2.writes == []  # Xid 79 stays reported: nothing written again
    assert health_from_node(node, 0).areas["gpu"].reason == "Xid79"


async def test_node_not_registered_yet_is_reported_again(tmp_path: Path) -> None:
    make_host(tmp_path, "node-0")
    w, clock = RecordingWriter(), Clock()
    w.missing.add("node-0")
    agents = SimAgents(tmp_path, w, CFG, clock)
    await agents.tick_all()
    clock.t += 10
    await agents.tick_all()
    assert len(w.writes) == 2  # tried again: the node did not exist
    w.missing.clear()
    clock.t += 10
    await agents.tick_all()
    clock.t += 10
    await agents.tick_all()
    assert len(w.writes) == 3  # written once it exists, then nothing


async def test_host_agent_loop_reads_the_real_host(tmp_path: Path) -> None:
    import asyncio

    from gpuyard.health.agent import host_checker, run_host_agent

    ib = tmp_path / "ib" / "mlx5_0" / "ports" / "1"
    ib.mkdir(parents=True)
    (ib / "state").write_text("4: ACTIVE\n")
    (ib / "phys_state").write_text("5: LinkUp\n")
    log = tmp_path / "kern.log"
    log.write_text(format_xid_line("0000:13:00", 79, "old, before the agent started") + "\n")
    cfg = AgentConfig(interval_s=0.05, verdict=VerdictConfig(quiet_s=60))
    ch = host_checker("me", cfg, [str(tmp_path)], [], str(tmp_path / "ib"), str(log))
    w = RecordingWriter()
    stop = asyncio.Event()

    async def get_node() -> dict:  # type: ignore[type-arg]
        return {"metadata": {"name": "me"}, "status": {"capacity": {}}}

    task = asyncio.create_task(run_host_agent(ch, w, get_node, stop, cfg))
    await asyncio.sleep(0.2)
    first = {c.type: (c.status, c.reason) for _, cs in w.writes for c in cs}
    # No NVML here: GPU is Unknown (said once); disk and network are checked.
    assert first["GPUHealthy"][0] in ("Unknown", "True")
    assert first["DiskHealthy"] == ("True", "Healthy")
    assert first["NetworkHealthy"] == ("True", "Healthy")
    n = len(w.writes)
    (ib / "state").write_text("1: DOWN\n")
    with open(log, "a") as f:
        f.write(format_xid_line("0000:13:00", 79, "GPU has fallen off the bus.") + "\n")
    await asyncio.sleep(0.3)
    stop.set()
    stats = await task
    later = {c.type: (c.status, c.reason) for _, cs in w.writes[n:] for c in cs}
    assert later["NetworkHealthy"] == ("False", "InfiniBandDown")
    assert later["GPUHealthy"] == ("False", "Xid79")
    assert stats.ticks >= 3


async def test_drift_down_marker_and_reboot(tmp_path: Path) -> None:
    import os

    h = make_host(tmp_path, "node-0")
    (h / "boot").write_text("1")
    w, clock = RecordingWriter(), Clock()
    view: dict[str, dict] = {}  # type: ignore[type-arg]
    agents = SimAgents(tmp_path, w, CFG, clock, node_view=view.get, drift_grace_s=0.0)
    await agents.tick_all()
    assert len(w.writes) == 1
    # Someone replaced the node's conditions (a kubelet posting its own list): rewrite.
    view["node-0"] = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    clock.t += 10
    await agents.tick_all()
    assert len(w.writes) == 2 and agents.stats.drift == 1
    view["node-0"] = {"status": {"conditions": conditions_patch(w.writes[-1][1], "t")}}
    clock.t += 10
    await agents.tick_all()
    assert len(w.writes) == 2
    # A down node's agent does not run.
    (h / "down").touch()
    with open(h / "kern.log", "a") as f:
        f.write(format_xid_line("0000:13:00", 79, "GPU has fallen off the bus.") + "\n")
    clock.t += 10
    await agents.tick_all()
    assert len(w.writes) == 2
    (h / "down").unlink()
    clock.t += 10
    await agents.tick_all()
    assert w.writes[-1][1][0].reason == "Xid79"
    # The host reboots (GPUs reset): the latched Xid clears after the quiet period.
    (h / "boot").write_text("2")
    os.utime(h / "boot", ns=(1, 10**18))
    for _ in range(8):
        clock.t += 10
        await agents.tick_all()
    assert w.writes[-1][1][0].status == "True"
