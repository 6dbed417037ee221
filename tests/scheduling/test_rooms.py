"""The scheduling package is cut in rooms a newcomer can find: every module opens with
what it holds and is named in the package's map, and the arrows between the rooms
point one way (only the pass driver calls into the others at run time)."""

from __future__ import annotations

import ast
from pathlib import Path

import gpuyard.scheduling as pkg

ROOT = Path(pkg.__file__).parent


def modules() -> list[Path]:
    return sorted(p for p in ROOT.glob("*.py") if p.name != "__init__.py")


def test_every_module_says_what_it_holds_and_is_on_the_map() -> None:
    doc = pkg.__doc__ or ""
    for p in modules():
        tree = ast.parse(p.read_text())
        first = ast.get_docstring(tree)
        assert first and len(first.split()) >= 5, f"{p.name} does not say what it holds"
        assert p.name in doc, f"{p.name} is missing from the package docstring's map"


def runtime_imports(p: Path) -> set[str]:
    """Modules of the package that `p` imports outside `if TYPE_CHECKING:`."""
    tree = ast.parse(p.read_text())
    out: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                continue
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "gpuyard.scheduling."
            ):
                out.add(node.module.rsplit(".", 1)[1])  # type: ignore[union-attr]
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, field, []))

    visit(tree.body)
    return out


def test_rooms_do_not_call_back_into_the_driver() -> None:
    for p in modules():
        if p.stem in ("policy", "scheduler", "cli", "component"):
            continue
        assert "policy" not in runtime_imports(p), f"{p.name} imports the pass driver"
    # the queue depends on nothing but the snapshot
    assert runtime_imports(ROOT / "queue.py") <= {"state"}
