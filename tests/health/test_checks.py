"""Each check against fixture files: the NVML double, disk.json and a real statvfs,
a fake /sys/class/infiniband tree and real TCP connects, and the kernel-log tail."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path

import pytest

from gpuyard.health.checks import Severity, worst
from gpuyard.health.checks.disk import (
    HostDiskSource,
    JsonDiskSource,
    Mount,
    check_disk,
    read_only_mounts,
    read_only_superblocks,
)
from gpuyard.health.checks.gpu import JsonGpuSource, NvmlGpuSource, check_gpus
from gpuyard.health.checks.kernel import KernelLogTail, XidTracker
from gpuyard.health.checks.net import (
    HostNetSource,
    JsonNetSource,
    NetStatus,
    check_network,
    read_ib_ports,
)
from gpuyard.health.xid import format_xid_line

FIXTURES = Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------------------- GPU


def test_healthy_gpus_give_no_problems() -> None:
    gpus = JsonGpuSource(FIXTURES / "gpus_healthy.json").read()
    assert [g.pci for g in gpus] == ["0000:18:00.0", "0000:2a:00.0"]
    findings = check_gpus(gpus, expected=2)
    # GPU 1 idles at PCIe gen 1: a warning, never a taint.
    assert [(f.reason, f.severity) for f in findings] == [("GPUPCIeGenLow", Severity.WARN)]


def test_each_gpu_fault_is_found() -> None:
    gpus = JsonGpuSource(FIXTURES / "gpus_faulty.json").read()
    findings = check_gpus(gpus, expected=8)
    got = {(f.reason, f.severity) for f in findings}
    assert got == {
        ("GPUCountMismatch", Severity.UNHEALTHY),
        ("GPUUncorrectableECC", Severity.FATAL),
        ("GPUResetRequired", Severity.UNHEALTHY),
        ("GPURowRemapFailure", Severity.FATAL),
        ("GPUPCIeDegraded", Severity.UNHEALTHY),
        ("GPUHardwareSlowdown", Severity.UNHEALTHY),
    }
    by_reason = {f.reason: f.message for f in findings}
    assert by_reason["GPUCountMismatch"] == "7 of 8 GPUs visible (lost: 5)"
    assert "x8 of x16" in by_reason["GPUPCIeDegraded"]
    assert sum(f.reason == "GPUResetRequired" for f in findings) == 2  # remap + retired pages
    top = worst(findings)
    assert top is not None and top.reason == "GPUUncorrectableECC"


def test_nvml_absent_is_reported_not_raised() -> None:
    src = NvmlGpuSource()
    ok, why = src.available()
    if ok:  # pragma: no cover - only on a GPU machine
        assert src.read()
    else:
        assert "NVML" in why
        assert src.read() == []


def test_missing_gpu_state_file_is_unavailable(tmp_path: Path) -> None:
    ok, why = JsonGpuSource(tmp_path / "gpus.json").available()
    assert not ok and "gpus.json" in why


# --------------------------------------------------------------------------- disk


def test_disk_json_full_and_read_only() -> None:
    mounts = JsonDiskSource(FIXTURES / "disk.json").read()
    findings = check_disk(mounts)
    assert [(f.reason, f.message.split(":")[0]) for f in findings] == [
        ("DiskFull", "/raid"),
        ("DiskReadOnly", "/mnt/ro is read-only"),
    ]


def test_disk_threshold_needs_both_fraction_and_floor() -> None:
    big = Mount("/data", total=100 << 40, free=2 << 40)  # 2% but 2 TiB free: fine
    assert check_disk([big]) == []
    small = Mount("/", total=20 << 30, free=500 << 20)  # 2.4%, 500 MiB
    assert [f.reason for f in check_disk([small])] == ["DiskFull"]


def test_real_statvfs_and_proc_mounts(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        f"/dev/sdb1 {tmp_path} ext4 ro,relatime 0 0\n"
        "tmpfs /run tmpfs rw,nosuid 0 0\n"
    )
    assert read_only_mounts(mounts.read_text()) == {"/": False, str(tmp_path): True, "/run": False}
    none = str(tmp_path / "no-mountinfo")  # a kernel without it: /proc/mounts
    got = HostDiskSource([str(tmp_path), "/"], proc_mounts=str(mounts), mountinfo=none).read()
    assert [m.read_only for m in got] == [True, False]
    st = os.statvfs("/")
    assert got[1].total == st.f_blocks * st.f_frsize and 0 <= got[1].free <= got[1].total
    assert [f.reason for f in check_disk(got, min_free_fraction=0)] == ["DiskReadOnly"]


def test_read_only_bind_of_the_host_root_is_not_a_read_only_disk(tmp_path: Path) -> None:
    # The agent's DaemonSet mounts the host's / read-only: per-mount "ro", filesystem
    # "rw". A filesystem the kernel remounted read-only after errors is "ro" in both.
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
        f"40 22 8:1 / {tmp_path} ro,relatime master:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
        "41 22 8:17 / /data rw,relatime shared:2 - xfs /dev/sdb1 ro,attr2\n"
    )
    assert read_only_superblocks(info.read_text()) == {
        "/": False,
        str(tmp_path): False,
        "/data": True,
    }
    got = HostDiskSource([str(tmp_path)], mountinfo=str(info)).read()
    assert [m.read_only for m in got] == [False]


# ------------------------------------------------------------------------ network


def _fake_ib(root: Path, ports: dict[tuple[str, str], tuple[str, str]]) -> Path:
    for (dev, port), (state, phys) in ports.items():
        d = root / "class" / "infiniband" / dev / "ports" / port
        d.mkdir(parents=True)
        (d / "state").write_text(state + "\n")
        (d / "phys_state").write_text(phys + "\n")
    return root / "class" / "infiniband"


def test_infiniband_ports_from_fake_sys(tmp_path: Path) -> None:
    ib = _fake_ib(
        tmp_path,
        {
            ("mlx5_0", "1"): ("4: ACTIVE", "5: LinkUp"),
            ("mlx5_1", "1"): ("1: DOWN", "3: Disabled"),
            ("mlx5_2", "1"): ("2: INIT", "5: LinkUp"),
        },
    )
    ports = read_ib_ports(ib)
    assert [(p.device, p.state, p.phys_state) for p in ports] == [
        ("mlx5_0", "ACTIVE", "LinkUp"),
        ("mlx5_1", "DOWN", "Disabled"),
        ("mlx5_2", "INIT", "LinkUp"),
    ]
    findings = check_network(NetStatus({}, ports))
    assert [f.reason for f in findings] == ["InfiniBandDown"]
    assert "mlx5_1" in findings[0].message and "mlx5_2" in findings[0].message
    assert "mlx5_0" not in findings[0].message
    shutil.rmtree(ib / "mlx5_1")
    shutil.rmtree(ib / "mlx5_2")
    assert check_network(NetStatus({}, read_ib_ports(ib))) == []
    assert read_ib_ports(tmp_path / "nothing") == []


async def test_tcp_peers_real_connects(tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    try:
        src = HostNetSource(
            [f"127.0.0.1:{port}", f"127.0.0.1:{dead}"], ib_root=tmp_path, timeout=0.5
        )
        status = await src.read()
    finally:
        server.close()
        await server.wait_closed()
    assert status.peers == {f"127.0.0.1:{port}": True, f"127.0.0.1:{dead}": False}
    findings = check_network(status)
    assert [f.reason for f in findings] == ["PeersUnreachable"]
    assert f"127.0.0.1:{dead}" in findings[0].message
    assert check_network(status, max_unreachable_fraction=0.5) == []


def test_bad_peer_config_is_refused() -> None:
    with pytest.raises(ValueError, match="peer 'no-port' is not HOST:PORT"):
        HostNetSource(["no-port"])
    with pytest.raises(ValueError, match="port 70000 is out of range"):
        HostNetSource(["10.0.0.1:70000"])


def test_net_json_double() -> None:
    status = JsonNetSource(FIXTURES / "net.json").read_sync()
    assert status.peers == {"10.0.0.1:22": True, "10.0.0.2:22": False}
    assert {f.reason for f in check_network(status)} == {"PeersUnreachable", "InfiniBandDown"}


# ------------------------------------------------------------------------- kernel


def test_kernel_tail_reads_incrementally(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text("[ 1.0] boot\n")
    tail = KernelLogTail(log)
    assert tail.read_new() == ["[ 1.0] boot"]
    assert tail.read_new() == []
    with open(log, "a") as f:
        f.write(format_xid_line("0000:3b:00", 79, "GPU has fallen off the bus.") + "\n")
        f.write("[ 2.0] partial")
    lines = tail.read_new()
    assert len(lines) == 1 and "Xid" in lines[0]
    with open(log, "a") as f:
        f.write(" line\n")
    assert tail.read_new() == ["[ 2.0] partial line"]
    log.write_text("[ 0.5] rebooted\n")  # shorter: rotated / new boot
    assert tail.read_new() == ["[ 0.5] rebooted"] and tail.rotated


def test_kernel_tail_from_end_skips_history(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text("old line\n")
    tail = KernelLogTail(log, from_end=True)
    assert tail.read_new() == []
    with open(log, "a") as f:
        f.write("new line\n")
    assert tail.read_new() == ["new line"]


def test_xid_tracker_latches_fatal_and_rates_app_errors() -> None:
    tr = XidTracker(app_window_s=60, app_threshold=3)
    lines = (FIXTURES / "kern.log").read_text().splitlines()
    tr.observe_lines(lines, now=1000.0)
    reasons = {(f.reason, f.severity) for f in tr.findings(1000.0)}
    assert ("Xid79", Severity.FATAL) in reasons
    assert ("Xid48", Severity.FATAL) in reasons
    assert ("Xid63", Severity.UNHEALTHY) in reasons
    assert ("SXid24007", Severity.FATAL) in reasons
    # 13, 43, 31, SXid 12028 and the unknown 999: 5 app-class > 3 -> high rate.
    assert ("XidHighRate", Severity.UNHEALTHY) in reasons
    # Latched faults stay; the app rate decays out of the window.
    later = {f.reason for f in tr.findings(1061.0)}
    assert "Xid79" in later and "XidHighRate" not in later and "XidApp" not in later
    tr.clear()
    assert tr.findings(1062.0) == []


def test_a_few_app_xids_only_warn() -> None:
    tr = XidTracker(app_window_s=3600, app_threshold=50)
    tr.observe_lines([format_xid_line("0000:3b:00", 13, "Graphics Exception")] * 5, now=0.0)
    assert [(f.reason, f.severity) for f in tr.findings(1.0)] == [("XidApp", Severity.WARN)]
