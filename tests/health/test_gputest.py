"""`gpuyard gpu-test`: the could-not-run path without PyTorch, the simulated report the
injected faults imply, the compact termination message, and (with a GPU) the real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuyard.health import gputest
from gpuyard.health.xid import format_xid_line

ROOT = Path(__file__).resolve().parents[2]


def _host(tmp_path: Path, n: int = 8, **per_gpu: dict) -> Path:  # type: ignore[type-arg]
    host = tmp_path / "hosts" / "node-1"
    host.mkdir(parents=True)
    gpus = []
    for i in range(n):
        g = {
            "index": i,
            "pci_bus_id": f"0000:{i + 16:02x}:00.0",
            "product": "NVIDIA-H100-80GB-HBM3",
            "perf_factor": 1.0,
        }
        g.update(per_gpu.get(str(i), {}))
        gpus.append(g)
    (host / "gpus.json").write_text(json.dumps({"gpus": gpus}))
    (host / "kern.log").write_text("[ 1.0] boot\n")
    return host


def test_without_torch_it_says_so_and_exits_2(tmp_path: Path) -> None:
    try:
        import torch  # noqa: F401

        pytest.skip("PyTorch is installed here")
    except ImportError:
        pass
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpuyard.cli",
            "gpu-test",
            "--termination-log",
            str(tmp_path / "term"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 2
    assert "PyTorch is not installed" in out.stderr
    report = json.loads(out.stdout)
    assert report["exit_code"] == 2 and report["ok"] is False
    assert json.loads((tmp_path / "term").read_text())["could_not_run"]


def test_simulated_healthy_host_passes(tmp_path: Path) -> None:
    report, code = gputest.simulate_report(_host(tmp_path), expected_gpus=8)
    assert code == 0 and report["ok"] and report["simulated"] is True
    assert report["failed"] == []
    assert len([c for c in report["checks"] if c["name"] == "matmul"]) == 8
    assert report["gpus"][0]["model"] == "H100 SXM"


def test_slow_gpu_fails_its_matmul(tmp_path: Path) -> None:
    host = _host(tmp_path, **{"3": {"perf_factor": 0.5}})
    report, code = gputest.simulate_report(host, expected_gpus=8)
    assert code == 1
    assert "matmul.gpu3" in report["failed"]
    assert gputest.first_failing_check(report) == "matmul"
    assert not any(f.endswith("gpu2") for f in report["failed"])


def test_lost_gpu_fails_the_count(tmp_path: Path) -> None:
    report, code = gputest.simulate_report(_host(tmp_path, **{"5": {"present": False}}), 8)
    assert code == 1 and report["failed"] == ["gpu_count"]
    assert gputest.first_failing_check(report) == "gpu_count"


def test_xid_and_ecc_fail(tmp_path: Path) -> None:
    host = _host(tmp_path, **{"1": {"ecc_volatile_uncorrectable": 3}})
    with open(host / "kern.log", "a") as f:
        f.write(format_xid_line("0000:11:00", 79, "GPU has fallen off the bus.") + "\n")
    report, code = gputest.simulate_report(host, 8)
    assert code == 1 and set(report["failed"]) == {"ecc", "xid"}


def test_missing_host_could_not_run(tmp_path: Path) -> None:
    report, code = gputest.simulate_report(tmp_path / "nope", 8)
    assert code == 2 and report["could_not_run"]


def test_compact_report_fits_termination_message(tmp_path: Path) -> None:
    report, _ = gputest.simulate_report(_host(tmp_path, n=64), 64)
    report["checks"] += [{"name": f"x{i}", "ok": False, "value": "y" * 50} for i in range(200)]
    text = gputest.compact(report)
    assert len(text.encode()) <= 4096
    assert json.loads(text)["exit_code"] == report["exit_code"]


def test_model_table() -> None:
    for name, want in [
        ("NVIDIA H200", "H200"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100 SXM 40GB"),
        ("NVIDIA-H100-80GB-HBM3", "H100 SXM"),
    ]:
        spec = gputest.model_spec(name)
        assert spec is not None and spec.name == want, name
    assert gputest.model_spec("Tesla K80") is None


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs PyTorch with CUDA")
def test_real_gpu_run(tmp_path: Path) -> None:  # pragma: no cover - GPU machines only
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-m", "gpuyard.cli", "gpu-test", "--iters", "10"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=env,
    )
    report = json.loads(out.stdout)
    assert out.returncode in (0, 1)
    assert report["gpus"] and all(g["matmul_tflops"] > 0 for g in report["gpus"])
    assert out.returncode == 0, report["failed"]
