"""The reason label of the pending metrics, from the scheduler's own reason text."""

from __future__ import annotations

import pytest

from gpuyard.scheduling.reasons import CATEGORIES, category


@pytest.mark.parametrize(
    ("reason", "want"),
    [
        ("gang big needs 3 pods at once; 0 fit on 0 nodes; 2 lack nvidia.com/gpu", "InsufficientGPU"),
        ("pod a fits on no node of 3; 1 lacks nvidia.com/gpu; 2 are cordoned", "InsufficientGPU"),
        ("pod a fits on no node of 3; 3 lack cpu", "InsufficientResources"),
        ("gang big needs 3 pods at once; 1 fit on 1 node; 1 carries an untolerated taint t", "InsufficientCapacity"),
        ("gang big needs 3 pods at once; 0 fit on 0 nodes; 2 carry an untolerated taint t", "NoMatchingNode"),
        ("gang big waits for members: 1 of minMember 3 exist", "WaitingForMembers"),
        ("gang big: PodGroup default/big not found", "PodGroupNotFound"),
        ("gang big did not fit within scheduleTimeoutSeconds=60; backing off", "GangTimeout"),
        ("gang big: minResources nvidia.com/gpu=64 exceeds the 8 free in the cluster", "MinResources"),
        ("pod a fits on no node of 2; 2 are held for gang other", "HeldForReservation"),
        ("does not fit", "Other"),
    ],
)  # fmt: skip
def test_category(reason: str, want: str) -> None:
    assert category(reason) == want
    assert want in CATEGORIES
