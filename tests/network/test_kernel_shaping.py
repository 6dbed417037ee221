"""Internet egress shaping in real namespaces: a limited pod's internet traffic runs at its
limit, its in-cluster traffic and other pods do not."""

from __future__ import annotations

import pytest

from gpuyard.network.nft import NftAccounting, PodRule
from gpuyard.network.shaping import Shaper, TcError

from . import netlab
from .test_kernel_accounting import WHY, counts, lab, ranges, send  # noqa: F401

pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")
LIMIT = 200_000_000  # 200Mbit


def test_internet_egress_runs_at_the_limit_and_in_cluster_is_not_limited(lab):  # noqa: F811
    acc = NftAccounting(netns=lab.ns("n1"))
    acc.ensure(ranges())
    pa = PodRule("team-a", "pa", netlab.PODS["pa"], uid="uid-pa", tclass=1)
    pb = PodRule("team-a", "pb", netlab.PODS["pb"], uid="uid-pb")
    acc.sync([pa, pb])
    shaper = Shaper("up0", netns=lab.ns("n1"))
    shaper.ensure()
    shaper.sync({1: LIMIT})
    assert shaper.current() == {1: LIMIT}

    nbytes = 40_000_000  # about 1.6 s at the limit
    c0 = counts(acc)[("pa", "out", "internet")][0]
    secs = send(lab, "pa", "inet", netlab.TARGETS["internet"], nbytes)
    ip_bytes = counts(acc)[("pa", "out", "internet")][0] - c0
    rate = ip_bytes * 8 / secs
    assert abs(rate - LIMIT) <= 0.10 * LIMIT, f"{rate / 1e6:.0f} Mbit/s against a 200 Mbit/s limit"

    # The same pod's in-cluster traffic leaves by the same uplink, unshaped.
    secs = send(lab, "pa", "n3", netlab.TARGETS["cluster"], nbytes, port=5203)
    assert nbytes * 8 / secs > 3 * LIMIT
    # A pod without a limit is untouched, on the internet too.
    secs = send(lab, "pb", "inet", netlab.TARGETS["internet"], nbytes, port=5204)
    assert nbytes * 8 / secs > 3 * LIMIT

    # Removing the limit removes the class; the pod then runs unshaped.
    acc.sync([PodRule("team-a", "pa", netlab.PODS["pa"], uid="uid-pa"), pb])
    shaper.sync({})
    assert shaper.current() == {}
    secs = send(lab, "pa", "inet", netlab.TARGETS["internet"], nbytes, port=5205)
    assert nbytes * 8 / secs > 3 * LIMIT


def test_a_root_qdisc_someone_else_set_is_left_alone(lab):  # noqa: F811
    """The shaper replaces only the kernel's default root qdisc; another root (a handle of
    its own) is refused with a clear error and stays; after it is gone, ours is made."""

    def root() -> str:
        r = lab.run("n1", "tc", "qdisc", "show", "dev", "up0", capture_output=True, text=True)
        return next(line for line in r.stdout.splitlines() if " root " in line)

    shaper = Shaper("up0", netns=lab.ns("n1"))
    netlab.sh(
        f"ip netns exec {lab.ns('n1')} tc qdisc add dev up0 root tbf rate 1gbit burst 32k "
        "latency 50ms"
    )
    theirs = root()
    with pytest.raises(TcError, match=r"up0 has a root qdisc that is not gpuyard's \(tbf "):
        shaper.ensure()
    assert root() == theirs
    netlab.sh(f"ip netns exec {lab.ns('n1')} tc qdisc del dev up0 root")
    shaper.ensure()
    assert root().startswith("qdisc htb 1: root")
    shaper.ensure()  # ours, found again (an agent's restart): kept
    assert root().startswith("qdisc htb 1: root")
