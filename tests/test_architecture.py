"""The map of the house, held true: which package may import which, and how large a room may grow.

`LAYERS` is the one statement of the import rules. This test checks the code
against it, each package's docstring against it, and the diagram and table in
docs/architecture.md against it (`python -m tests.test_architecture` prints
them, to paste after a change of the rules).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "videosvc"

#: Everything below the web layer: the web layer may name any of it (its keys hold the domain's objects).
DOMAIN = {
    "aio",
    "config",
    "errors",
    "events",
    "hooks",
    "jobs",
    "logs",
    "media",
    "signing",
    "store",
    "uploads",
    "videos",
}
#: What each part of videosvc may import of the others (its own modules aside). Lower layers first.
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "aio": set(),
    "hooks": set(),
    "signing": set(),
    "config": set(),
    "logs": {"config"},
    "media": {"config"},
    "store": {"aio", "errors"},
    "events": {"config", "errors", "store"},
    "jobs": {"config", "errors", "events", "hooks", "media", "store"},
    "uploads": {"aio", "config", "errors", "media", "signing", "store"},
    "videos": {"aio", "config", "errors", "events", "hooks", "jobs", "media", "signing", "store", "uploads"},
    "web": DOMAIN,
    "app": DOMAIN | {"web"},
    "server": {"app", "config", "hooks", "logs", "web"},
    "client": set(),
    "__main__": {"client", "config", "jobs", "logs", "media", "server", "store"},
}
#: The packages (folders) among them: their __init__ docstrings state their rule.
PACKAGES = ("store", "events", "jobs", "media", "uploads", "videos", "web", "client")
#: A room a newcomer reads in one sitting; larger needs a reason in its docstring ("Long, ...").
MAX_CLASS_LINES = 210
MAX_FUNCTION_LINES = 50


def _unit(module: str) -> str:
    """videosvc.store.videos -> store; videosvc.app -> app."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_of(path: Path) -> list[str]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports() -> dict[str, dict[str, set[str]]]:
    """unit -> imported unit -> the modules that import it."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_of(path)
        package = module if path.name == "__init__.py" else module[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                names.append(".".join(base + ([node.module] if node.module else [])))
            elif isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            for name in names:
                if name.startswith("videosvc.") and _unit(name) != _unit(".".join(module)):
                    found[_unit(".".join(module))][_unit(name)].add(".".join(module))
    return found


def test_each_part_imports_only_what_the_map_allows() -> None:
    found = imports()
    assert set(found) <= set(LAYERS), f"parts not in the map: {set(found) - set(LAYERS)}"
    broken = {
        f"{unit} -> {other} ({', '.join(sorted(modules))})"
        for unit, targets in found.items()
        for other, modules in targets.items()
        if other not in LAYERS[unit]
    }
    assert not broken, "imports the map does not allow:\n" + "\n".join(sorted(broken))


def test_the_map_has_no_cycle() -> None:
    seen: dict[str, int] = {}

    def visit(unit: str, path: tuple[str, ...]) -> None:
        assert unit not in path, f"a cycle: {' -> '.join((*path, unit))}"
        for other in LAYERS[unit]:
            visit(other, (*path, unit))

    for unit in LAYERS:
        visit(unit, ())
        seen[unit] = 1


def test_each_package_says_what_it_may_import() -> None:
    for package in PACKAGES:
        doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())) or ""
        match = re.search(r"May import: ([^.]*)\.", doc)
        assert match, f"videosvc/{package}/__init__.py does not say what it may import"
        said = {name.strip() for name in match[1].replace("\n", " ").split(",") if name.strip()}
        said.discard("nothing of videosvc")
        assert said == LAYERS[package], (
            f"{package}: its docstring says {sorted(said)}, the map {sorted(LAYERS[package])}"
        )


def test_docs_draw_the_map_the_test_holds() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers -->\n(.*?)<!-- /layers -->", doc, re.S)
    assert block, "docs/architecture.md has no <!-- layers --> block"
    assert block[1] == render(), (
        "docs/architecture.md's map differs: paste `python -m tests.test_architecture`"
    )


def test_no_room_is_too_large_without_a_reason() -> None:
    too_large = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            reason = "Long" in (ast.get_docstring(node) or "")
            if lines > limit and not reason:
                too_large.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert not too_large, "rooms over their size, with no reason given:\n" + "\n".join(too_large)


def render() -> str:
    """The map as docs/architecture.md shows it: a diagram (each arrow one the others do not
    already imply), then a table of everything each part may import."""
    edges = sorted(
        (unit, other) for unit, others in LAYERS.items() for other in others if not _implied(unit, other)
    )
    lines = ["```mermaid", "flowchart TD"]
    lines += [f"    {_node(unit)} --> {_node(other)}" for unit, other in edges]
    lines += ["```", "", "| part | may import |", "|---|---|"]
    for unit, others in LAYERS.items():
        allowed = ", ".join(f"`{other}`" for other in sorted(others)) or "nothing of videosvc"
        lines.append(f"| `{unit}` | {allowed} |")
    return "\n".join(lines) + "\n"


def _implied(unit: str, other: str) -> bool:
    """`unit` reaches `other` through another part it may import."""

    def reaches(start: str) -> set[str]:
        found, todo = set(), [start]
        while todo:
            for nxt in LAYERS[todo.pop()]:
                if nxt not in found:
                    found.add(nxt)
                    todo.append(nxt)
        return found

    return any(other in reaches(middle) for middle in LAYERS[unit] if middle != other)


def _node(unit: str) -> str:
    return unit.strip("_") or unit


if __name__ == "__main__":
    print(render(), end="")
