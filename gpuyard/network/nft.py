"""Per-pod accounting rules in the kernel, in nftables table ``inet gpuyard`` (ours alone).

Layout: one base chain ``forward`` (hook forward) with verdict-map lookups, pod address
to ``jump p_<id>_out`` / ``jump p_<id>_in`` (maps ``pod_out``/``pod_in`` for IPv4,
``pod6_out``/``pod6_in`` for IPv6: a dual-stack pod is in both); each pod chain counts into
eight named counter objects ``c_<id>_<direction>_<class>`` (bytes and packets, both families
together) and returns; nothing is ever dropped or accepted, so other tables' verdicts are
untouched. Ranges of the classes live in interval sets, ``r_<class>`` (IPv4) and
``r6_<class>`` (IPv6). A pod's internet-bound packets may also get skb->priority 1:<tclass>,
the uplink HTB class of the shaper (gpuyard.network.shaping).

Changes go to the kernel as one nft batch (atomic: all or nothing), run in-process through
libnftables (gpuyard.network.libnft: no process per batch, the ruleset cache kept between
batches) or, where that library is missing, through ``nft -f -``; state is read back as
JSON (``nft -j``), so a restarted agent rebuilds what it owns from the kernel: the
counters' comments hold namespace, name, address and mark; counters are never recreated for
a pod that still has them, so a restart neither loses nor double-counts.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass

from gpuyard.network import libnft
from gpuyard.network.classes import CLASSES, DIRECTIONS, Ranges, join_ips

TABLE = "gpuyard"
# One counter of ``nft list counters``: name, optional comment, then its packets and bytes.
_COUNTER_TEXT = re.compile(
    r'^\s*counter (\S+) \{\s*(?:comment "([^"]*)"\s*)?packets (\d+) bytes (\d+)', re.M
)
CLASS_MASK = 0xFFFF


class NftError(RuntimeError):
    pass


def pod_id(namespace: str, name: str, uid: str = "") -> str:
    return hashlib.sha1(f"{namespace}/{name}/{uid}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PodRule:
    """What the kernel holds for one pod: who it is, its address, its shaping class (0: none)."""

    namespace: str
    name: str
    ip: str  # the pod's addresses, canonical (classes.join_ips): "10.1.1.2,fd00:1::2"
    uid: str = ""
    tclass: int = 0

    @property
    def addrs(self) -> list[str]:
        return self.ip.split(",") if self.ip else []

    @property
    def id(self) -> str:
        return pod_id(self.namespace, self.name, self.uid)

    def comment(self) -> str:
        # Kubernetes names and uids hold no "|" (nor a double quote): a plain separator.
        return "|".join([self.namespace, self.name, self.uid, self.ip, str(self.tclass)])

    @classmethod
    def parse(cls, comment: str) -> PodRule | None:
        parts = comment.split("|")
        if len(parts) != 5 or not parts[4].isdigit():
            return None
        ns, name, uid, ip, mark = parts
        return cls(ns, name, ip, uid, int(mark))


@dataclass(frozen=True)
class Count:
    pod: PodRule
    cls: str
    direction: str
    packets: int
    bytes: int


def _counter(pid: str, direction: str, cls: str) -> str:
    return f"c_{pid}_{direction}_{cls}"


def _elements(verb: str, t: str, pid: str, addrs: list[str]) -> list[str]:
    """Add (or delete) a pod's addresses in the verdict maps of their family."""
    lines = []
    for ip in addrs:
        fam = "6" if ":" in ip else ""
        for d in DIRECTIONS:
            value = f" : jump p_{pid}_{d}" if verb == "add" else ""
            lines.append(f"{verb} element {t} pod{fam}_{d} {{ {ip}{value} }}")
    return lines


class NftAccounting:
    """The accounting rules of one node (``netns``: run inside that network namespace)."""

    def __init__(self, netns: str | None = None, table: str = TABLE, nft: str = "nft"):
        self.netns = netns
        self.table = table
        self.nft = nft
        self.batches = 0
        # In-process where the library is there (and no other nft binary was asked for).
        self._lib = libnft.load(netns) if nft == "nft" else None

    @property
    def in_process(self) -> bool:
        return self._lib is not None

    # -- kernel I/O: one subprocess per batch or read ------------------------------------
    def _cmd(self, *args: str) -> list[str]:
        base = [self.nft, *args]
        return ["ip", "netns", "exec", self.netns, *base] if self.netns else base

    def _run(self, script: str) -> None:
        self.batches += 1
        if self._lib is not None:
            try:
                self._lib.run(script)
            except libnft.LibnftError as exc:
                raise NftError(f"nft batch refused: {exc}\n--- batch ---\n{script}") from None
            return
        p = subprocess.run(self._cmd("-f", "-"), input=script, capture_output=True, text=True)
        if p.returncode != 0:
            raise NftError(f"nft batch refused: {p.stderr.strip()}\n--- batch ---\n{script}")

    def _list(self) -> list[dict]:
        """The whole table, as nft's JSON (what a restarted agent rebuilds from)."""
        if self._lib is not None:
            try:
                out = self._lib.run(f"list table inet {self.table}", json=True)
            except libnft.LibnftError as exc:
                if "No such file" in str(exc):
                    return []
                raise NftError(f"nft list refused: {exc}") from None
            return json.loads(out).get("nftables", []) if out.strip() else []
        p = subprocess.run(
            self._cmd("-j", "list", "table", "inet", self.table), capture_output=True, text=True
        )
        if p.returncode != 0:
            if "No such file" in p.stderr:
                return []
            raise NftError(f"nft list refused: {p.stderr.strip()}")
        return json.loads(p.stdout).get("nftables", [])

    # -- set-up --------------------------------------------------------------------------
    def ensure(self, ranges: Ranges) -> None:
        """Create the table, sets and base chain if missing; set the class ranges."""
        t = f"inet {self.table}"
        lines = [f"add table {t}"]
        for name in ("node", "zone", "cluster"):
            nets = getattr(ranges, name)
            for fam, typ, mine in (("", "ipv4_addr", ":"), ("6", "ipv6_addr", ".")):
                s = f"r{fam}_{name}"
                lines.append(f"add set {t} {s} {{ type {typ}; flags interval; auto-merge; }}")
                lines.append(f"flush set {t} {s}")
                members = [n for n in nets if mine not in n]
                if members:
                    lines.append(f"add element {t} {s} {{ {', '.join(members)} }}")
        lines += [
            f"add map {t} pod_out {{ type ipv4_addr : verdict; }}",
            f"add map {t} pod_in {{ type ipv4_addr : verdict; }}",
            f"add map {t} pod6_out {{ type ipv6_addr : verdict; }}",
            f"add map {t} pod6_in {{ type ipv6_addr : verdict; }}",
            f"add chain {t} forward {{ type filter hook forward priority -150; policy accept; }}",
            f"flush chain {t} forward",
            f"add rule {t} forward ip saddr vmap @pod_out",
            f"add rule {t} forward ip daddr vmap @pod_in",
            f"add rule {t} forward ip6 saddr vmap @pod6_out",
            f"add rule {t} forward ip6 daddr vmap @pod6_in",
        ]
        self._run("\n".join(lines) + "\n")

    def destroy(self) -> None:
        """Remove the table and everything in it (ours only)."""
        if self._list():
            self._run(f"delete table inet {self.table}\n")

    # -- pods ----------------------------------------------------------------------------
    def _chain_rules(self, pod: PodRule) -> list[str]:
        t, pid = f"inet {self.table}", pod.id
        out, inn = f"p_{pid}_out", f"p_{pid}_in"
        lines = [f"flush chain {t} {out}", f"flush chain {t} {inn}"]
        # Only the families the pod has: its chain sees only packets of its own addresses.
        families = sorted({"ip6" if ":" in a else "ip" for a in pod.addrs})
        for cls in CLASSES[:-1]:
            for fam in families:
                s = f"@r{fam[2:]}_{cls}"
                lines.append(
                    f'add rule {t} {out} {fam} daddr {s} counter name "{_counter(pid, "out", cls)}" return'
                )
                lines.append(
                    f'add rule {t} {inn} {fam} saddr {s} counter name "{_counter(pid, "in", cls)}" return'
                )
        shape = ""
        if pod.tclass:
            # The uplink's HTB (gpuyard.network.shaping) takes skb->priority 1:<tclass> as
            # the class itself: no tc filter needed, nothing of the packet's mark touched.
            shape = f" meta priority set 1:{pod.tclass & CLASS_MASK:x}"
        lines.append(f'add rule {t} {out} counter name "{_counter(pid, "out", "internet")}"{shape}')
        lines.append(f'add rule {t} {inn} counter name "{_counter(pid, "in", "internet")}"')
        return lines

    def _add(self, pod: PodRule) -> list[str]:
        t, pid = f"inet {self.table}", pod.id
        comment = pod.comment()
        lines = []
        for d in DIRECTIONS:
            for cls in CLASSES:
                lines.append(f'add counter {t} {_counter(pid, d, cls)} {{ comment "{comment}"; }}')
            lines.append(f"add chain {t} p_{pid}_{d}")
        lines += self._chain_rules(pod)
        lines += _elements("add", t, pid, pod.addrs)
        return lines

    def _remove(self, pod: PodRule) -> list[str]:
        t, pid = f"inet {self.table}", pod.id
        lines = _elements("delete", t, pid, pod.addrs)
        for d in DIRECTIONS:
            lines += [f"flush chain {t} p_{pid}_{d}", f"delete chain {t} p_{pid}_{d}"]
            lines += [f"delete counter {t} {_counter(pid, d, c)}" for c in CLASSES]
        return lines

    def _update(self, old: PodRule, new: PodRule) -> list[str]:
        """Same pod, new addresses or mark: counters kept, chains and map entries rewritten."""
        t, pid = f"inet {self.table}", new.id
        lines = []
        if old.ip != new.ip:
            lines += _elements("delete", t, pid, old.addrs)
            lines += _elements("add", t, pid, new.addrs)
        lines += self._chain_rules(new)
        return lines

    def owned(self, items: list[dict] | None = None) -> dict[str, PodRule]:
        """The pods the kernel holds rules for, rebuilt from the kernel alone: identity from
        the counters' comments (fixed for a pod id), address from the verdict map, mark from
        the internet rule."""
        if items is None:
            items = self._list()
        who: dict[str, PodRule] = {}
        ips: dict[str, list[str]] = {}
        marks: dict[str, int] = {}
        for item in items:
            if (c := item.get("counter")) and c["name"].endswith("_out_internet"):
                pod = PodRule.parse(c.get("comment", ""))
                if pod is not None:
                    who[pod.id] = pod
            elif (m := item.get("map")) and m["name"] in ("pod_out", "pod6_out"):
                for ip, verdict in m.get("elem", []):
                    target = verdict.get("jump", {}).get("target", "")
                    ips.setdefault(target[2:-4], []).append(ip)
            elif (r := item.get("rule")) and r["chain"].endswith("_out"):
                for e in r.get("expr", []):
                    value = e.get("mangle", {}).get("value")
                    if isinstance(value, str) and value.startswith("1:"):
                        marks[r["chain"][2:-4]] = int(value[2:], 16)
        return {
            pid: PodRule(p.namespace, p.name, join_ips(ips[pid]), p.uid, marks.get(pid, 0))
            for pid, p in who.items()
            if pid in ips
        }

    def sync(self, desired: list[PodRule], current: dict[str, PodRule] | None = None) -> dict:
        """Make the kernel hold exactly ``desired``, in one atomic batch. Returns the changes."""
        if current is None:
            current = self.owned()
        want = {p.id: p for p in desired}
        lines: list[str] = []
        added, removed, updated = [], [], []
        for pid, pod in current.items():
            if pid not in want:
                lines += self._remove(pod)
                removed.append(pod)
        for pid, pod in want.items():
            old = current.get(pid)
            if old is None:
                lines += self._add(pod)
                added.append(pod)
            elif old != pod:
                lines += self._update(old, pod)
                updated.append(pod)
        if lines:
            self._run("\n".join(lines) + "\n")
        return {"added": added, "removed": removed, "updated": updated}

    def _counters(self) -> list[tuple[str, str, int, int]]:
        """Every counter of the table: name, comment, packets, bytes. In-process: one
        netlink dump of the counter objects (libnft.read_counters: no ruleset cache fetched,
        nothing printed). Through the command: nft's text, not its JSON (at 110 pods its
        JSON printer took longer than the kernel dump); the counter block's layout is fixed
        and our comments hold no double quote (PodRule.comment)."""
        if self._lib is not None:
            try:
                return libnft.read_counters(self._lib, self.table)
            except libnft.LibnftError as exc:
                raise NftError(f"counter read refused: {exc}") from None
        p = subprocess.run(
            self._cmd("list", "counters", "table", "inet", self.table),
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            if "No such file" in p.stderr:
                return []
            raise NftError(f"nft list refused: {p.stderr.strip()}")
        out = p.stdout
        return [(m[1], m[2] or "", int(m[3]), int(m[4])) for m in _COUNTER_TEXT.finditer(out)]

    def read(self) -> list[Count]:
        """Every owned counter, with the pod it belongs to: one kernel read for the node."""
        pods: dict[str, PodRule] = {}
        raw = []
        for name, comment, packets, nbytes in self._counters():
            if not name.startswith("c_"):
                continue
            _, pid, direction, cls = name.split("_", 3)
            if pid not in pods:
                pod = PodRule.parse(comment)
                if pod is None:
                    continue
                pods[pid] = pod
            raw.append((pid, cls, direction, packets, nbytes))
        return [Count(pods[p], cls, d, pk, by) for p, cls, d, pk, by in raw if p in pods]
