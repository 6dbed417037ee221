"""`gpuyard up` refuses bad arguments and `--set` options before anything starts:
one line naming the flag or key, the value and what is expected; no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _up(tmp_path: object, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gpuyard",
            "up",
            "--port",
            "0",
            "--data-dir",
            f"{tmp_path}/d",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (["--port", "70000"], "argument --port: 70000 is out of range"),
        (["--node-grace", "-1"], "argument --node-grace: -1 is out of range"),
        (["--node-grace", "nan"], "argument --node-grace: nan is not a number of seconds > 0"),
        (["--lease-seconds", "0"], "argument --lease-seconds: 0 is out of range"),
        (["--nodes", "-3"], "argument --nodes: -3 is out of range"),
        (["--join-rate", "x"], "argument --join-rate: 'x' is not a number"),
        (
            ["--set", "health_quiet_s=abc"],
            "gpuyard: error: option health_quiet_s=abc: 'abc' is not a number of seconds",
        ),
        (["--set", "health_max_share=2"], "option health_max_share=2: 2 is out of range"),
        (["--set", "teams_webhook_port=70000"], "option teams_webhook_port=70000"),
        (["--set", "health_periodic=maybe"], "'maybe' is not true or false"),
        (["--set", "noequals"], "--set wants KEY=VALUE"),
    ],
)
def test_bad_arguments_are_refused_before_start(
    tmp_path: object, args: list[str], says: str
) -> None:
    r = _up(tmp_path, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr
    assert "Traceback" not in r.stderr
    assert "cluster up" not in r.stdout
    assert not os.path.exists(f"{tmp_path}/d/store.db")  # nothing started


def test_unknown_option_lists_the_known_ones(tmp_path: object) -> None:
    r = _up(tmp_path, "--set", "health_quite_s=5")
    assert r.returncode == 2
    line = r.stderr.strip()
    assert line.startswith("gpuyard: error: unknown option 'health_quite_s'; known options:")
    for key in ("health_quiet_s", "autoscaler_scan_s", "teams_webhook_mode", "balloons"):
        assert key in line
    assert "\n" not in line


def test_options_are_typed_by_their_declaration() -> None:
    from gpuyard.cliargs import parse_settings
    from gpuyard.cluster.up import known_options

    got = parse_settings(
        ["health_quiet_s=5", "health_periodic=true", "health_preflight_concurrency=3"],
        known_options(),
    )
    assert got == {
        "health_quiet_s": 5.0,
        "health_periodic": True,
        "health_preflight_concurrency": 3,
    }
    assert isinstance(got["health_quiet_s"], float)
    with pytest.raises(ValueError, match="health_preflight_concurrency=0"):
        parse_settings(["health_preflight_concurrency=0"], known_options())
