"""`gpuyard gpu-test`: the active GPU test that runs in preflight and periodic test pods.

With PyTorch and CUDA, per GPU: bf16 matrix-multiply TFLOP/s and device memory-copy
bandwidth against the expected values for the GPU model (`MODELS`); numerical agreement
between the GPUs (the same seeded matmul on each, compared); volatile uncorrectable ECC
counts and Xid events before and after (NVML); and NCCL all-reduce bus bandwidth across
the node's GPUs (torch.distributed, one spawned process per GPU) when there is more
than one. Prints a JSON report; exit 0 pass, 1 fail, 2 could not run (no PyTorch, no
GPU). PyTorch is imported lazily: the rest of gpuyard never needs it.

`--termination-log PATH` also writes a compact report (under Kubernetes' 4 KiB limit)
where kubelet picks it up as the container's termination message.

`simulate_report(simhost, expected_gpus)` is what the embedded cluster's simulated
kubelet calls for gpu-test pods: the report the injected faults imply (a slow-gpu
factor below the threshold fails that GPU's matmul; a lost GPU fails the count; ECC
errors and latched Xids fail), marked "simulated": true.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuyard.cliargs import COUNT, NATURAL, Int

# Bounds that keep a typo from asking for more memory than any GPU has: three N x N
# bf16 matrices of 65536 take 24 GiB; a copy or all-reduce buffer of 64 GiB.
MATMUL_SIZE = Int(1, 65536)
MIB = Int(1, 65536, "MiB")

EXIT_PASS, EXIT_FAIL, EXIT_COULD_NOT_RUN = 0, 1, 2
TERMINATION_LIMIT = 4096


@dataclass(frozen=True)
class ModelSpec:
    name: str
    bf16_tflops: float  # published dense bf16 tensor-core peak
    hbm_gbps: float  # published memory bandwidth, GB/s
    allreduce_busbw_gbps: float | None  # typical NCCL all-reduce bus bandwidth, 8 GPUs, NVLink


# Published peaks (dense, i.e. without structured sparsity). Matched against the
# device name, most specific first.
MODELS: list[tuple[tuple[str, ...], ModelSpec]] = [
    (("H200",), ModelSpec("H200", 989.0, 4800.0, 450.0)),
    (("H100", "NVL"), ModelSpec("H100 NVL", 835.0, 3900.0, None)),
    (("H100", "PCIE"), ModelSpec("H100 PCIe", 756.0, 2000.0, None)),
    (("H100",), ModelSpec("H100 SXM", 989.0, 3350.0, 450.0)),
    (("GH200",), ModelSpec("GH200", 989.0, 4000.0, None)),
    (("A100", "PCIE", "40GB"), ModelSpec("A100 PCIe 40GB", 312.0, 1555.0, None)),
    (("A100", "PCIE"), ModelSpec("A100 PCIe 80GB", 312.0, 1935.0, None)),
    (("A100", "40GB"), ModelSpec("A100 SXM 40GB", 312.0, 1555.0, 230.0)),
    (("A100",), ModelSpec("A100 SXM 80GB", 312.0, 2039.0, 230.0)),
    (("B200",), ModelSpec("B200", 2250.0, 8000.0, None)),
    (("L40S",), ModelSpec("L40S", 362.0, 864.0, None)),
    (("A10G",), ModelSpec("A10G", 70.0, 600.0, None)),
]

# Pass thresholds as a share of the published peak: a healthy GPU reaches roughly
# 60-80% of dense bf16 peak on a large square matmul and 80-90% of HBM bandwidth on a
# device-to-device copy; a clearly sick one falls well under these.
MATMUL_THRESHOLD = 0.5
MEMCPY_THRESHOLD = 0.6
ALLREDUCE_THRESHOLD = 0.5
RELATIVE_THRESHOLD = 0.8  # a GPU this far under the node's median fails even off-table
AGREEMENT_RTOL = 1e-2


def model_spec(name: str) -> ModelSpec | None:
    up = name.upper().replace("-", " ")
    for keys, spec in MODELS:
        if all(k in up for k in keys):
            return spec
    return None


def _check(name: str, ok: bool, gpu: int | None = None, **detail: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "ok": ok}
    if gpu is not None:
        out["gpu"] = gpu
    out.update(detail)
    return out


def finish(report: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Fill in ok/failed/exit_code from the report's checks."""
    checks = report.setdefault("checks", [])
    failed = [c["name"] + (f".gpu{c['gpu']}" if "gpu" in c else "") for c in checks if not c["ok"]]
    if report.get("could_not_run"):
        code = EXIT_COULD_NOT_RUN
    else:
        code = EXIT_FAIL if failed else EXIT_PASS
    report["failed"] = failed
    report["ok"] = code == EXIT_PASS
    report["exit_code"] = code
    return report, code


def compact(report: dict[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """The report as JSON under `limit` bytes: per-check details dropped first."""
    text = json.dumps(report, separators=(",", ":"))
    if len(text.encode()) <= limit:
        return text
    small = {k: v for k, v in report.items() if k not in ("checks", "gpus")}
    small["checks"] = [
        {k: c[k] for k in ("name", "ok", "gpu", "value") if k in c} for c in report["checks"]
    ]
    text = json.dumps(small, separators=(",", ":"))
    if len(text.encode()) <= limit:
        return text
    small.pop("checks")
    small["failed"] = small.get("failed", [])[:50]
    return json.dumps(small, separators=(",", ":"))[:limit]


def first_failing_check(report: dict[str, Any]) -> str:
    """The first failed check's name ("matmul", "gpu_count", ...), or "gpu-test"."""
    for c in report.get("checks") or []:
        if not c.get("ok"):
            return str(c.get("name", "gpu-test"))
    if report.get("could_not_run"):
        return "could-not-run"
    return "gpu-test"


# ---------------------------------------------------------------------------- simulated


def _host_dir(simhost: Any) -> Path:
    if isinstance(simhost, str | os.PathLike):
        return Path(simhost)
    for attr in ("path", "dir", "root", "host_dir"):
        v = getattr(simhost, attr, None)
        if isinstance(v, str | os.PathLike):
            return Path(v)
    return Path(simhost)


def simulate_report(
    simhost: Any,
    expected_gpus: int | None = None,
    product: str | None = None,
    efficiency: float = 0.72,
    now: float | None = None,
) -> tuple[dict[str, Any], int]:
    """The report a real gpu-test would give on this simulated host, from its injected
    faults. `simhost`: a SimHost or its directory (with gpus.json, kern.log)."""
    from gpuyard.health.checks import Severity
    from gpuyard.health.checks.gpu import JsonGpuSource, check_gpus
    from gpuyard.health.checks.kernel import KernelLogTail, XidTracker

    host = _host_dir(simhost)
    report: dict[str, Any] = {
        "simulated": True,
        "host": host.name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "checks": [],
        "gpus": [],
    }
    src = JsonGpuSource(host / "gpus.json")
    ok, why = src.available()
    if not ok:
        report["could_not_run"] = why
        return finish(report)
    gpus = src.read()
    present = [g for g in gpus if g.present]
    expected = expected_gpus if expected_gpus is not None else len(gpus)
    report["checks"].append(
        _check("gpu_count", len(present) >= expected, value=len(present), expected=expected)
    )
    for g in present:
        spec = model_spec(product or g.product or "H100") or model_spec("H100")
        assert spec is not None
        tflops = spec.bf16_tflops * efficiency * g.perf_factor
        gbps = spec.hbm_gbps * 0.85 * g.perf_factor
        report["gpus"].append(
            {
                "index": g.index,
                "model": spec.name,
                "matmul_tflops": round(tflops, 1),
                "memcpy_gbps": round(gbps, 1),
            }
        )
        report["checks"].append(
            _check(
                "matmul",
                tflops >= spec.bf16_tflops * MATMUL_THRESHOLD,
                g.index,
                value=round(tflops, 1),
                expected=spec.bf16_tflops,
                threshold=MATMUL_THRESHOLD,
            )
        )
        report["checks"].append(
            _check(
                "memcpy",
                gbps >= spec.hbm_gbps * MEMCPY_THRESHOLD,
                g.index,
                value=round(gbps, 1),
                expected=spec.hbm_gbps,
                threshold=MEMCPY_THRESHOLD,
            )
        )
    hw = [f for f in check_gpus(gpus, None) if f.severity >= Severity.UNHEALTHY]
    report["checks"].append(
        _check(
            "ecc",
            not any(f.reason in ("GPUUncorrectableECC", "GPURowRemapFailure") for f in hw),
            value=[f.message for f in hw][:8],
        )
    )
    tracker = XidTracker()
    tracker.observe_lines(KernelLogTail(host / "kern.log").read_new(), 0.0)
    latched = [f"{ev.label} on {ev.pci}" for ev in tracker.latched.values()]
    report["checks"].append(_check("xid", not latched, value=latched[:8]))
    return finish(report)


# ------------------------------------------------------------------------------- real


class CouldNotRun(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nvml_snapshot() -> tuple[Any, dict[int, int]]:
    """(an NVML event set collecting Xids, volatile uncorrectable ECC per GPU); the
    event set is None where NVML or events are not available."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None, {}
    ecc: dict[int, int] = {}
    evset = None
    try:
        evset = pynvml.nvmlEventSetCreate()
    except pynvml.NVMLError:
        evset = None
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        try:
            ecc[i] = int(
                pynvml.nvmlDeviceGetTotalEccErrors(
                    h, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
                )
            )
        except pynvml.NVMLError:
            pass
        if evset is not None:
            try:
                pynvml.nvmlDeviceRegisterEvents(h, pynvml.nvmlEventTypeXidCriticalError, evset)
            except pynvml.NVMLError:
                pass
    return evset, ecc


def _nvml_xids(evset: Any) -> list[dict[str, int]]:
    if evset is None:
        return []
    import pynvml

    out = []
    while True:
        try:
            data = pynvml.nvmlEventSetWait_v2(evset, 0)
        except pynvml.NVMLError:
            break
        out.append({"xid": int(data.eventData), "gpu": -1})
        if len(out) > 100:
            break
    return out


def _time_cuda(torch: Any, fn: Any, iters: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return float(start.elapsed_time(end)) / 1000.0


def _measure_gpu(torch: Any, i: int, size: int, iters: int, copy_mib: int) -> dict[str, Any]:
    dev = torch.device("cuda", i)
    with torch.cuda.device(dev):
        a = torch.randn(size, size, device=dev, dtype=torch.bfloat16)
        b = torch.randn(size, size, device=dev, dtype=torch.bfloat16)
        out = torch.empty(size, size, device=dev, dtype=torch.bfloat16)
        secs = _time_cuda(torch, lambda: torch.matmul(a, b, out=out), iters)
        tflops = 2 * size**3 * iters / secs / 1e12
        n = copy_mib * (1 << 20) // 4
        src = torch.empty(n, device=dev, dtype=torch.float32).fill_(1.0)
        dst = torch.empty_like(src)
        secs = _time_cuda(torch, lambda: dst.copy_(src), iters)
        gbps = 2 * src.numel() * 4 * iters / secs / 1e9  # read + write
        # Numerical agreement: the same seeded inputs on every GPU.
        gen = torch.Generator().manual_seed(1234)
        x = torch.randn(1024, 1024, generator=gen).to(dev)
        y = torch.randn(1024, 1024, generator=gen).to(dev)
        ref = torch.matmul(x.to(torch.bfloat16), y.to(torch.bfloat16)).float().cpu()
        torch.cuda.empty_cache()
    return {
        "index": i,
        "name": torch.cuda.get_device_name(i),
        "matmul_tflops": tflops,
        "memcpy_gbps": gbps,
        "_ref": ref,
    }


def _allreduce_worker(rank: int, world: int, port: int, mib: int, iters: int, q: Any) -> None:
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        t = torch.ones(mib * (1 << 20) // 4, device="cuda", dtype=torch.float32)
        for _ in range(3):
            dist.all_reduce(t)
        torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t)
        torch.cuda.synchronize()
        secs = (time.perf_counter() - t0) / iters
        if rank == 0:
            algbw = t.numel() * 4 / secs / 1e9
            q.put(algbw * 2 * (world - 1) / world)
    finally:
        dist.destroy_process_group()


def _allreduce_busbw(world: int, mib: int, iters: int) -> float:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    mp.start_processes(
        _allreduce_worker,
        args=(world, _free_port(), mib, iters, q),
        nprocs=world,
        join=True,
        start_method="spawn",
    )
    return float(q.get())


def run_real(
    expected_gpus: int | None = None,
    size: int = 8192,
    iters: int = 20,
    copy_mib: int = 1024,
    allreduce_mib: int = 256,
    nccl: bool = True,
) -> tuple[dict[str, Any], int]:
    report: dict[str, Any] = {
        "simulated": False,
        "host": socket.gethostname(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "checks": [],
        "gpus": [],
    }
    try:
        import torch
    except ImportError:
        report["could_not_run"] = "PyTorch is not installed"
        return finish(report)
    if not torch.cuda.is_available():
        report["could_not_run"] = "no CUDA GPU visible to PyTorch"
        return finish(report)
    t0 = time.perf_counter()
    evset, ecc_before = _nvml_snapshot()
    n = torch.cuda.device_count()
    exp = expected_gpus if expected_gpus is not None else n
    report["checks"].append(_check("gpu_count", n >= exp, value=n, expected=exp))
    try:
        results = [_measure_gpu(torch, i, size, iters, copy_mib) for i in range(n)]
    except torch.cuda.OutOfMemoryError as exc:
        # Sizes the flags allow can still be more than a smaller GPU holds: bad input
        # for this machine, reported as such, not a failed GPU.
        first = str(exc).splitlines()[0] if str(exc) else "out of memory"
        report["could_not_run"] = (
            f"--size {size} and --copy-mib {copy_mib} need more GPU memory than is free: {first}"
        )
        return finish(report)
    med_mm = sorted(r["matmul_tflops"] for r in results)[n // 2]
    med_cp = sorted(r["memcpy_gbps"] for r in results)[n // 2]
    for r in results:
        spec = model_spec(r["name"])
        i = r["index"]
        entry = {
            k: (round(v, 1) if isinstance(v, float) else v)
            for k, v in r.items()
            if not k.startswith("_")
        }
        entry["model"] = spec.name if spec else None
        report["gpus"].append(entry)
        mm_ok = r["matmul_tflops"] >= RELATIVE_THRESHOLD * med_mm
        cp_ok = r["memcpy_gbps"] >= RELATIVE_THRESHOLD * med_cp
        if spec:
            mm_ok = mm_ok and r["matmul_tflops"] >= MATMUL_THRESHOLD * spec.bf16_tflops
            cp_ok = cp_ok and r["memcpy_gbps"] >= MEMCPY_THRESHOLD * spec.hbm_gbps
        report["checks"].append(
            _check(
                "matmul",
                mm_ok,
                i,
                value=round(r["matmul_tflops"], 1),
                expected=spec.bf16_tflops if spec else None,
                threshold=MATMUL_THRESHOLD,
            )
        )
        report["checks"].append(
            _check(
                "memcpy",
                cp_ok,
                i,
                value=round(r["memcpy_gbps"], 1),
                expected=spec.hbm_gbps if spec else None,
                threshold=MEMCPY_THRESHOLD,
            )
        )
    ref = results[0]["_ref"]
    for r in results[1:]:
        diff = float((r["_ref"] - ref).abs().max() / (ref.abs().max() + 1e-12))
        report["checks"].append(
            _check(
                "agreement",
                diff <= AGREEMENT_RTOL,
                r["index"],
                value=diff,
                threshold=AGREEMENT_RTOL,
            )
        )
    if n > 1 and nccl:
        try:
            busbw = _allreduce_busbw(n, allreduce_mib, iters)
            spec = model_spec(results[0]["name"])
            want = spec.allreduce_busbw_gbps if spec and n == 8 else None
            ok = want is None or busbw >= ALLREDUCE_THRESHOLD * want
            report["checks"].append(
                _check(
                    "allreduce",
                    ok,
                    value=round(busbw, 1),
                    expected=want,
                    threshold=ALLREDUCE_THRESHOLD,
                )
            )
        except Exception as exc:
            report["checks"].append(_check("allreduce", False, value=None, error=str(exc)[:300]))
    _, ecc_after = _nvml_snapshot()
    grew = {
        i: ecc_after[i] - ecc_before.get(i, 0)
        for i in ecc_after
        if ecc_after[i] > 0 or ecc_after[i] > ecc_before.get(i, 0)
    }
    report["checks"].append(
        _check("ecc", not grew, value=grew or 0, nvml=bool(ecc_before or ecc_after))
    )
    xids = _nvml_xids(evset)
    report["checks"].append(_check("xid", not xids, value=xids[:8], nvml=evset is not None))
    report["duration_s"] = round(time.perf_counter() - t0, 2)
    return finish(report)


# -------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expected-gpus",
        type=NATURAL,
        default=None,
        help="GPUs this machine should have (default: as many as visible)",
    )
    parser.add_argument(
        "--size", type=MATMUL_SIZE, default=8192, help="matmul size (N x N, bf16; default 8192)"
    )
    parser.add_argument("--iters", type=COUNT, default=20, help="timed matmuls (default 20)")
    parser.add_argument(
        "--copy-mib", type=MIB, default=1024, help="memory-copy buffer in MiB (default 1024)"
    )
    parser.add_argument(
        "--allreduce-mib", type=MIB, default=256, help="all-reduce buffer in MiB (default 256)"
    )
    parser.add_argument("--no-nccl", action="store_true", help="skip the all-reduce test")
    parser.add_argument(
        "--termination-log",
        default=None,
        help="also write a compact report here (e.g. /dev/termination-log)",
    )
    parser.add_argument(
        "--simulate",
        default=None,
        metavar="HOST_DIR",
        help="report what the faults of this simulated host imply",
    )


def run(args: argparse.Namespace) -> int:
    if args.expected_gpus is not None and args.expected_gpus < 0:
        print("gpuyard gpu-test: --expected-gpus must be >= 0", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    if args.simulate:
        report, code = simulate_report(args.simulate, args.expected_gpus)
    else:
        report, code = run_real(
            args.expected_gpus,
            args.size,
            args.iters,
            args.copy_mib,
            args.allreduce_mib,
            not args.no_nccl,
        )
    if report.get("could_not_run"):
        print(f"gpuyard gpu-test: could not run: {report['could_not_run']}", file=sys.stderr)
    print(json.dumps(report, indent=2))
    if args.termination_log:
        try:
            Path(args.termination_log).write_text(compact(report))
        except OSError as exc:
            print(f"gpuyard gpu-test: cannot write {args.termination_log}: {exc}", file=sys.stderr)
    return code
