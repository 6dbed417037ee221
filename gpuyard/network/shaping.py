"""Internet egress shaping per pod: HTB classes on the node's uplink.

The accounting rules (gpuyard.network.nft) set skb->priority to 1:<tclass> on a limited
pod's internet-bound packets only; HTB takes a priority naming one of its classes as the
class (no tc filter, so no cls_fw module needed), rate = ceil = the pod's limit.
Other traffic (in-cluster, and pods without a limit) matches no class and HTB sends it
unshaped (``default 0``). Changes go as one ``tc -batch -``; state is read back over netlink (pyroute2).
Ours is the HTB root with handle 1:; it replaces only the kernel's default root qdisc
(handle 0:), never one that someone else set.
"""

from __future__ import annotations

import subprocess

ROOT = "1:"


class TcError(RuntimeError):
    pass


class Shaper:
    def __init__(self, dev: str, netns: str | None = None, tc: str = "tc"):
        self.dev = dev
        self.netns = netns
        self.tc = tc

    def _cmd(self, *args: str) -> list[str]:
        base = [self.tc, *args]
        return ["ip", "netns", "exec", self.netns, *base] if self.netns else base

    def _batch(self, lines: list[str]) -> None:
        if not lines:
            return
        p = subprocess.run(
            self._cmd("-batch", "-"), input="\n".join(lines) + "\n", capture_output=True, text=True
        )
        if p.returncode != 0:
            raise TcError(
                f"tc batch refused: {p.stderr.strip()}\n--- batch ---\n" + "\n".join(lines)
            )

    def _netlink(self):
        from pyroute2 import IPRoute, config

        # A namespace's socket is opened by a forked child that pyroute2 stops with SIGTERM.
        # The child must die of it by default: with the parent's signal handlers (asyncio's
        # wake-up fd, shared with the parent) it would hand the parent a SIGTERM of its own,
        # and `gpuyard netd` would stop at its first netlink read.
        config.disable_mp_signal = True
        return IPRoute(netns=self.netns) if self.netns else IPRoute()

    def _read(self) -> tuple[bool, dict[int, int], str]:
        """(our HTB root is there, tclass -> rate in bits per second, the root qdisc if it
        is someone else's: "" when it is ours or the kernel's default), over netlink."""
        with self._netlink() as nl:
            found = nl.link_lookup(ifname=self.dev)
            if not found:
                raise TcError(f"no device {self.dev} for the uplink shaper")
            idx = found[0]
            root, foreign = False, ""
            for q in nl.get_qdiscs(index=idx):
                if q["parent"] != 0xFFFFFFFF:
                    continue
                if q["handle"] == 0x10000 and q.get_attr("TCA_KIND") == "htb":
                    root = True
                elif q["handle"]:  # the kernel's default root has handle 0: someone set this
                    foreign = f"{q.get_attr('TCA_KIND')} {q['handle'] >> 16:x}:"
            classes = {}
            for c in nl.get_classes(index=idx):
                if c.get_attr("TCA_KIND") != "htb" or c["handle"] >> 16 != 1:
                    continue
                opts = c.get_attr("TCA_OPTIONS")
                rate = opts.get_attr("TCA_HTB_RATE64") or opts.get_attr("TCA_HTB_PARMS")["rate"]
                classes[c["handle"] & 0xFFFF] = int(rate) * 8
        return root, classes, foreign

    def ensure(self) -> None:
        """An HTB root on the uplink (kept if there already: its classes are the state).
        Only the kernel's default root qdisc is replaced: a root someone else set (a
        handle of its own) is left in place and refused with a clear error."""
        ours, _, foreign = self._read()
        if foreign:
            raise TcError(
                f"{self.dev} has a root qdisc that is not gpuyard's ({foreign}); it is left "
                "in place: remove it, or shape on another device (--uplink)"
            )
        if not ours:
            self._batch([f"qdisc replace dev {self.dev} root handle {ROOT} htb default 0"])

    def current(self) -> dict[int, int]:
        """tclass -> rate (bits per second) of every pod class on the uplink."""
        return self._read()[1]

    def sync(self, want: dict[int, int]) -> None:
        """Make the uplink hold exactly ``want`` (tclass -> bits per second), in one batch."""
        have = set(self.current())
        d = self.dev
        lines = []
        for mark in sorted(have - set(want)):
            lines.append(f"class del dev {d} classid 1:{mark:x}")
        for mark, bits in sorted(want.items()):
            # Burst: at least 10 ms at the rate, so a fast link is not held to tiny bursts.
            burst = max(64 * 1024, bits // 8 // 100)
            verb = "change" if mark in have else "add"
            lines.append(
                f"class {verb} dev {d} parent {ROOT} classid 1:{mark:x} htb rate {bits}bit "
                f"ceil {bits}bit burst {burst} cburst {burst}"
            )
        self._batch(lines)
