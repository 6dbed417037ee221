"""Writes gpuyard/k8s/data/protobuf.json: the protobuf wire numbers of the built-in kinds.

Run by a developer when the Kubernetes version changes:
`python -m gpuyard.k8s.proto_gen --api GITDIR --apimachinery GITDIR`, with git
directories of k8s.io/api and k8s.io/apimachinery (kubernetes/api, kubernetes/apimachinery).
The API server only reads the file this writes (gpuyard.apiserver.protobuf).

Sources of the facts: each package's `generated.proto` (message, field number, name, type,
repeated or map), and its Go types (`types.go` and the other files beside it) for what
protobuf cannot say but JSON shows: the JSON name (`webhooks`, where the proto says
`Webhooks`), whether a field is a pointer (a zero value that is
sent is kept) or an `omitempty` value (a zero value is not written to JSON), which
fields are embedded structs whose fields JSON writes in the parent (`json:""`:
an Ingress rule's IngressRuleValue, a Volume's VolumeSource, a Probe's handler), and which
messages stand for a Go slice (`type ExtraValue []string`: JSON is the list itself).
Wire numbers are never reused, so a newer API tree describes 1.37's fields too.

Only the messages reachable from the served kinds (gpuyard.k8s.kinds) are written.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

OUT = Path(__file__).parent / "data" / "protobuf.json"
MACHINERY = (
    "pkg/apis/meta/v1",
    "pkg/runtime",
    "pkg/runtime/schema",
    "pkg/util/intstr",
    "pkg/api/resource",
)
# Messages every body may need besides the kinds: the envelope and delete options.
ROOTS = (
    "k8s.io.apimachinery.pkg.runtime.Unknown",
    "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "k8s.io.api.policy.v1.Eviction",
    "k8s.io.api.autoscaling.v1.Scale",
    "k8s.io.api.authentication.v1.TokenRequest",
)

_FIELD = re.compile(
    r"^\s*(optional|repeated|required)?\s*(map<\s*([\w.]+)\s*,\s*([\w.]+)\s*>|[\w.]+)\s+"
    r"(\w+)\s*=\s*(\d+)\s*;"
)
_GO_FIELD = re.compile(r"^\s+(?:(\w+)\s+)?(\*?)([\w.\[\]*]+)\s+`([^`]*)`")
_SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float"}


def _git_files(gitdir: str, prefix: str) -> list[str]:
    out = subprocess.run(
        ["git", "--git-dir", gitdir, "ls-tree", "--name-only", "HEAD", prefix + "/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line]


def _show(gitdir: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", gitdir, "show", f"HEAD:{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def parse_proto(text: str) -> dict[str, list[list[Any]]]:
    """message full name -> [[number, name, type, label]] (label: o, r or m; a map's
    type is "KEY,VALUE"); types are full names or scalar names."""
    pkg = re.search(r"^package\s+([\w.]+)\s*;", text, re.M)
    if pkg is None:
        raise SystemExit("a generated.proto without a package")
    package = pkg.group(1)
    out: dict[str, list[list[Any]]] = {}
    current: str | None = None
    for line in text.splitlines():
        line = line.split("//", 1)[0]
        m = re.match(r"^\s*message\s+(\w+)\s*\{", line)
        if m:
            current = f"{package}.{m.group(1)}"
            out[current] = []
            continue
        if current is None:
            continue
        if line.strip() == "}":
            current = None
            continue
        f = _FIELD.match(line)
        if not f:
            continue

        def full(t: str) -> str:
            if t.startswith("."):
                return t[1:]
            return t if t in _SCALARS or "." in t else f"{package}.{t}"

        if f.group(3):
            typ, label = f"{full(f.group(3))},{full(f.group(4))}", "m"
        else:
            typ, label = full(f.group(2)), "r" if f.group(1) == "repeated" else "o"
        out[current].append([int(f.group(6)), f.group(5), typ, label])
    return out


def parse_go(text: str, package: str) -> tuple[dict[str, dict[int, tuple[str, str]]], set[str]]:
    """(message -> field number -> (JSON name, "p" pointer | "e" omitempty | "k" always
    written)), and the messages that are Go slices."""
    flags: dict[str, dict[int, tuple[str, str]]] = {}
    slices: set[str] = set()
    current: str | None = None
    for line in text.splitlines():
        m = re.match(r"^type\s+(\w+)\s+struct\s*\{", line)
        if m:
            current = f"{package}.{m.group(1)}"
            flags.setdefault(current, {})
            continue
        m = re.match(r"^type\s+(\w+)\s+\[\]", line)
        if m:
            slices.add(f"{package}.{m.group(1)}")
            continue
        if line.startswith("}"):
            current = None
            continue
        if current is None:
            continue
        g = _GO_FIELD.match(line)
        if not g:
            continue
        tags = g.group(4)
        pb = re.search(r'protobuf:"\w+,(\d+),', tags)
        if not pb:
            continue
        js = re.search(r'json:"([^"]*)"', tags)
        jparts = js.group(1).split(",") if js else [""]
        omit = "omitempty" in jparts[1:]
        flag = "p" if g.group(2) else ("e" if omit else "k")
        if jparts[0] == "" and (g.group(1) is None or "inline" in jparts[1:]):
            flag = "i"  # an embedded struct without a JSON name: its fields are the parent's
        flags[current][int(pb.group(1))] = (jparts[0], flag)
    return flags, slices


def build(api: str, machinery: str) -> dict[str, Any]:
    from gpuyard.apiserver.schemas import definitions
    from gpuyard.k8s.kinds import builtin_kinds

    messages: dict[str, list[list[Any]]] = {}
    flags: dict[str, dict[int, tuple[str, str]]] = {}
    slices: set[str] = set()
    dirs = [(api, d) for d in sorted({p.rsplit("/", 1)[0] for p in _api_protos(api)})]
    dirs += [(machinery, d) for d in MACHINERY]
    for gitdir, d in dirs:
        text = _show(gitdir, f"{d}/generated.proto")
        parsed = parse_proto(text)
        messages.update(parsed)
        package = re.search(r"^package\s+([\w.]+)\s*;", text, re.M).group(1)  # type: ignore[union-attr]
        for path in _git_files(gitdir, d):
            if path.endswith(".go") and not path.endswith(("_test.go", "generated.pb.go")):
                f, s = parse_go(_show(gitdir, path), package)
                for k, v in f.items():
                    flags.setdefault(k, {}).update(v)
                slices |= s
    defs = definitions()
    roots = list(ROOTS)
    for kd in builtin_kinds():
        name = defs.by_gvk.get((kd.group, kd.version, kd.kind))
        if name and name.startswith("io.k8s."):
            roots.append("k8s.io." + name[len("io.k8s.") :])
    keep: dict[str, Any] = {}
    todo = [r for r in roots if r in messages]
    while todo:
        n = todo.pop()
        if n in keep:
            continue
        fields = []
        for num, fname, typ, label in messages[n]:
            jname, flag = flags.get(n, {}).get(num, (fname, "e"))
            name = "" if flag == "i" else (fname if jname in ("", "-") else jname)
            fields.append([num, name, typ, label, flag])
            for t in typ.split(","):
                if t in messages and t not in keep:
                    todo.append(t)
        keep[n] = fields
    return {
        "messages": dict(sorted(keep.items())),
        "slices": sorted(s for s in slices if s in keep),
    }


def _api_protos(api: str) -> list[str]:
    out = subprocess.run(
        ["git", "--git-dir", api, "ls-tree", "-r", "--name-only", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # GA versions and the betas gpuyard serves (see gpuyard.k8s.kinds_gen)
    return [
        p
        for p in out.splitlines()
        if p.endswith("/generated.proto")
        and (re.search(r"/v\d+/generated\.proto$", p) or p == "scheduling/v1beta1/generated.proto")
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--api", required=True, help="git directory of k8s.io/api")
    ap.add_argument("--apimachinery", required=True, help="git directory of k8s.io/apimachinery")
    args = ap.parse_args(argv)
    data = build(args.api, args.apimachinery)
    lines = b",\n".join(
        orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in data["messages"].items()
    )
    OUT.write_bytes(
        b'{"slices": ' + orjson.dumps(data["slices"]) + b',\n"messages": {\n' + lines + b"\n}}\n"
    )
    print(f"wrote {OUT} ({len(data['messages'])} messages)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
