"""The images (deploy/images/Dockerfile, deploy/images/gpu.Dockerfile): the names `gpuyard manifests`
gives them, a non-root user, what they copy, and their entry points run as the
installed `gpuyard` command (the venv's console script, as the images install it).
No image is built by the tests (minutes, and a base image from a registry, or for the
control plane deploy/images/debian-base.sh: see README)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuyard import manifests

ROOT = Path(__file__).resolve().parents[1]
GPUYARD = shutil.which("gpuyard", path=str(Path(sys.executable).parent))


def _instructions(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


@pytest.mark.parametrize(
    ("dockerfile", "image"),
    [("Dockerfile", manifests.IMAGE), ("gpu.Dockerfile", manifests.GPU_IMAGE)],
)
def test_image_entry_point_is_a_gpuyard_command(dockerfile: str, image: str) -> None:
    path = ROOT / "deploy" / "images" / dockerfile
    ins = _instructions(path)
    assert f"-t {image} ." in path.read_text()  # the name the manifests use
    assert ins["USER"] == ["65532:65532"]  # non-root, numeric
    for src in " ".join(c.rsplit(" ", 1)[0] for c in ins["COPY"]).split():
        assert (ROOT / src).exists(), src
    entry = json.loads(ins["ENTRYPOINT"][-1]) + json.loads(ins["CMD"][-1])
    assert entry[0] == "gpuyard"
    assert GPUYARD, "the package's gpuyard console script is not installed"
    out = subprocess.run(
        [GPUYARD, *entry[1:]], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    if entry[1:] == ["gpu-test"] and importlib.util.find_spec("torch") is None:
        # Without PyTorch (this venv), gpu-test runs and says it could not run.
        assert out.returncode == 2, out.stderr
        assert "could not run: PyTorch is not installed" in out.stderr
        assert json.loads(out.stdout)["could_not_run"] == "PyTorch is not installed"
    elif entry[1:] != ["gpu-test"]:
        assert out.returncode == 0, out.stderr
        assert "manifests" in out.stdout  # the command list


def test_every_manifest_image_has_a_dockerfile() -> None:
    used = {
        c["image"]
        for d in manifests.objects()
        if d["kind"] in ("Deployment", "DaemonSet")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert used == {manifests.IMAGE, manifests.GPU_IMAGE}
