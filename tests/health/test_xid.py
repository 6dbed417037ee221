"""The Xid/SXid parser and classifier on real kernel-log line formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuyard.health.xid import XidClass, classify, format_xid_line, parse_line, parse_lines

FIXTURES = Path(__file__).parent / "fixtures"


def test_fixture_log_yields_every_record_in_order() -> None:
    events = parse_lines((FIXTURES / "kern.log").read_text())
    assert [(e.label, e.pci) for e in events] == [
        ("Xid 13", "0000:3b:00"),
        ("Xid 43", "0000:3b:00"),
        ("Xid 31", "0000:5d:00"),
        ("Xid 63", "0000:86:00"),
        ("Xid 79", "0000:86:00"),
        ("Xid 48", "0000:af:00"),
        ("SXid 12028", "0000:07:00.0"),
        ("SXid 24007", "0000:07:00.0"),
        ("Xid 154", "0000:18:00"),
        ("Xid 94", "0000:01:00"),
        ("Xid 999", "0000:3b:00"),
    ]
    classes = {e.label: e.cls for e in events}
    assert classes["Xid 13"] == classes["Xid 43"] == classes["Xid 31"] == XidClass.APP
    assert classes["Xid 63"] == classes["Xid 94"] == XidClass.RESET
    assert classes["Xid 79"] == classes["Xid 48"] == XidClass.FATAL
    assert classes["SXid 12028"] == XidClass.APP
    assert classes["SXid 24007"] == XidClass.FATAL
    assert classes["Xid 154"] == XidClass.FATAL  # "Node Reboot Required"
    assert classes["Xid 999"] == XidClass.UNKNOWN


def test_dmesg_line_fields() -> None:
    ev = parse_line(
        "[ 1234.567890] NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, "
        "GPU has fallen off the bus."
    )
    assert ev is not None
    assert (ev.code, ev.pci, ev.pid, ev.process) == (79, "0000:3b:00", "1234", "python")
    assert ev.message == "GPU has fallen off the bus."
    assert ev.timestamp == "1234.567890"
    assert ev.cls == XidClass.FATAL and not ev.sxid


@pytest.mark.parametrize(
    ("line", "ts"),
    [
        (
            "Nov 29 00:12:01 gpu-17 kernel: NVRM: Xid (PCI:0000:86:00): 64, pid='<unknown>', "
            "name=<unknown>, Row Remapper Error",
            "Nov 29 00:12:01",
        ),
        (
            "2026-11-29T00:13:02.123456+00:00 gpu-17 kernel: NVRM: Xid (PCI:0000:86:00): 64, "
            "pid='<unknown>', name=<unknown>, x",
            "2026-11-29T00:13:02.123456+00:00",
        ),
        (
            "[Sun Nov 29 00:14:03 2026] NVRM: Xid (PCI:0000:86:00): 64, pid=1, name=a, x",
            "Sun Nov 29 00:14:03 2026",
        ),
        ("NVRM: Xid (PCI:0000:86:00): 64, pid=1, name=a, x", None),
    ],
)
def test_prefixes(line: str, ts: str | None) -> None:
    ev = parse_line(line + "\n")
    assert ev is not None and ev.code == 64 and ev.cls == XidClass.FATAL
    assert ev.pci == "0000:86:00"
    assert ev.timestamp == ts
    if "pid='<unknown>'" in line:
        assert ev.pid == "<unknown>" and ev.process == "<unknown>"


def test_non_xid_lines_are_ignored() -> None:
    for line in [
        "",
        "[ 1.0] usb 1-1: new high-speed USB device",
        "NVRM: GPU at PCI:0000:3b:00: GPU-7d9d9b0c",
        "NVRM: Xid mentioned in passing without a record",
    ]:
        assert parse_line(line) is None


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (13, "app"),
        (31, "app"),
        (43, "app"),
        (45, "app"),
        (48, "fatal"),
        (94, "reset"),
        (95, "fatal"),
        (63, "reset"),
        (64, "fatal"),
        (74, "reset"),
        (79, "fatal"),
        (92, "reset"),
        (119, "reset"),
        (120, "reset"),
        (12345, "unknown"),
    ],
)
def test_classification_table(code: int, cls: str) -> None:
    assert classify(code).cls.value == cls


def test_xid_154_follows_the_recovery_action() -> None:
    assert (
        classify(154, "GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)").cls
        == XidClass.RESET
    )
    assert classify(154, "from 0x0 (None) to 0x2 (Node Reboot Required)").cls == XidClass.FATAL
    assert classify(154, "from 0x1 to 0x0 (None)").cls == XidClass.APP


def test_format_round_trips() -> None:
    ev = parse_line(format_xid_line("0000:3b:00", 79, "GPU has fallen off the bus.", 12.5))
    assert ev is not None and ev.code == 79 and ev.pci == "0000:3b:00"
    assert ev.timestamp == "12.500000"
