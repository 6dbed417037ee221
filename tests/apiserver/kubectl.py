"""Real kubectl against a test API server (the `apiserver` fixture's ServerProcess)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

KUBECTL = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or "kubectl"


def kubectl(
    srv: Any, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run kubectl with the server's kubeconfig; with check, a non-zero exit fails the
    test showing kubectl's stderr."""
    out = subprocess.run(
        [KUBECTL, "--kubeconfig", srv.kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )
    if check:
        assert out.returncode == 0, (args, out.stderr)
    return out
