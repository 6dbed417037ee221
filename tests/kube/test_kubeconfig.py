"""Kubeconfig and in-cluster configuration parsing (pure, no server)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import yaml

from gpuyard.kube.errors import ConfigError
from gpuyard.kube.kubeconfig import in_cluster_config, load_config, load_kubeconfig

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _doc() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "clusters": [
            {
                "name": "c-dev",
                "cluster": {
                    "server": "https://127.0.0.1:6443/",
                    "certificate-authority-data": base64.b64encode(CA).decode(),
                },
            },
            {
                "name": "c-prod",
                "cluster": {
                    "server": "https://127.0.0.1:7443",
                    "insecure-skip-tls-verify": True,
                },
            },
            {
                "name": "c-files",
                "cluster": {"server": "https://h:1", "certificate-authority": "ca.pem"},
            },
        ],
        "users": [
            {"name": "u-token", "user": {"token": "abc123"}},
            {
                "name": "u-cert",
                "user": {
                    "client-certificate-data": base64.b64encode(b"CERT").decode(),
                    "client-key-data": base64.b64encode(b"KEY").decode(),
                },
            },
            {
                "name": "u-files",
                "user": {"client-certificate": "c.pem", "client-key": "/abs/k.pem"},
            },
            {"name": "u-exec", "user": {"exec": {"command": "aws"}}},
        ],
        "contexts": [
            {"name": "dev", "context": {"cluster": "c-dev", "user": "u-token", "namespace": "ml"}},
            {"name": "prod", "context": {"cluster": "c-prod", "user": "u-cert"}},
            {"name": "files", "context": {"cluster": "c-files", "user": "u-files"}},
            {"name": "exec", "context": {"cluster": "c-dev", "user": "u-exec"}},
            {"name": "broken", "context": {"cluster": "missing", "user": "u-token"}},
        ],
    }


def _write(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "config"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_current_context_token_and_ca_data(tmp_path: Path) -> None:
    cfg = load_kubeconfig(_write(tmp_path, _doc()))
    assert cfg.server == "https://127.0.0.1:6443"
    assert cfg.bearer_token() == "abc123"
    assert cfg.ca_data == CA
    assert cfg.namespace == "ml"
    assert cfg.context == "dev"
    assert not cfg.insecure_skip_tls_verify


def test_named_context_client_cert_and_insecure(tmp_path: Path) -> None:
    cfg = load_kubeconfig(_write(tmp_path, _doc()), context="prod")
    assert cfg.server == "https://127.0.0.1:7443"
    assert cfg.insecure_skip_tls_verify
    assert cfg.client_cert_data == b"CERT" and cfg.client_key_data == b"KEY"
    assert cfg.bearer_token() is None
    assert cfg.namespace == "default"


def test_relative_paths_resolve_against_the_kubeconfig_folder(tmp_path: Path) -> None:
    cfg = load_kubeconfig(_write(tmp_path, _doc()), context="files")
    assert cfg.ca_file == str(tmp_path / "ca.pem")
    assert cfg.client_cert_file == str(tmp_path / "c.pem")
    assert cfg.client_key_file == "/abs/k.pem"


def test_kubeconfig_env_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, _doc())
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "nope"), str(p)]))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert load_config().server == "https://127.0.0.1:6443"


@pytest.mark.parametrize(
    ("doc", "context", "needle"),
    [
        ({"current-context": "x", "contexts": []}, None, "no context named 'x'"),
        ({"contexts": []}, None, "no current-context"),
        (None, "broken", "no cluster named 'missing'"),
        (None, "exec", "exec: apiVersion '' is not supported (use one of client.authentication"),
        ("just a string", None, "not a mapping"),
    ],
)
def test_bad_kubeconfigs_give_clear_errors(
    tmp_path: Path, doc: object, context: str | None, needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        load_kubeconfig(_write(tmp_path, _doc() if doc is None else doc), context=context)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read kubeconfig"):
        load_kubeconfig(tmp_path / "absent")
    bad = tmp_path / "bad"
    bad.write_text("a: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_kubeconfig(bad)


def test_in_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="not running in a cluster"):
        in_cluster_config(tmp_path)
    (tmp_path / "token").write_text("tok-1\n")
    (tmp_path / "namespace").write_text("gpuyard-system")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    cfg = in_cluster_config(tmp_path)
    assert cfg.server == "https://10.0.0.1:443"
    assert cfg.namespace == "gpuyard-system"
    assert cfg.bearer_token() == "tok-1"
    (tmp_path / "token.new").write_text("tok-two\n")  # rotated atomically, as kubelet does
    os.replace(tmp_path / "token.new", tmp_path / "token")
    assert cfg.bearer_token() == "tok-two"


def test_hostile_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    # an alias bomb, deep nesting and binary junk: one clear error, nothing expanded
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    for i, data in enumerate([bomb.encode(), b"a: " + b"[" * 5000, b"\xff\xfe\x00junk"]):
        f = tmp_path / f"k{i}"
        f.write_bytes(data)
        with pytest.raises(ConfigError, match="not valid YAML"):
            load_kubeconfig(f)
