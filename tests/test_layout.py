"""The layout follows the pipeline: a package imports only packages below it, never one above, and no circles.

Bottom to top (each layer may import the layers before it):
  foundation (nostr, net, logutil, metrics, ratelimit) → registry → config, identity → store → transports →
  delivery → engine → relays → dialects → cluster → app → api → ops → supervisor → cli
Data flows the other way: relays feed the engine, the engine hands notifications to delivery, delivery to the
transports; dialects sit beside the pipeline and write the registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pushstr"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("nostr", "net", "logutil", "metrics", "ratelimit", "private_files"),
    ("registry",),
    ("config", "identity", "config_reference"),
    ("store",),
    ("transports",),
    ("delivery",),
    ("engine",),
    ("relays",),
    ("dialects",),
    ("cluster",),
    ("app",),
    ("api",),
    ("ops",),
    ("supervisor",),
    ("cli",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _unit(module: str) -> str:
    """`pushstr.engine.pipeline` → `engine`; `pushstr.app` → `app`; `pushstr` itself → ``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        found.append((name, path))
    return found


MODULES = _modules()
KNOWN = {name for name, _ in MODULES}


def _imports(name: str, path: Path) -> set[str]:
    """pushstr modules imported by a module (type-checking-only imports included: they are dependencies too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.startswith("pushstr"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("pushstr"):
                imported.add(base)
                imported.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in KNOWN)
    return imported


@pytest.mark.parametrize(("name", "path"), MODULES, ids=[name for name, _ in MODULES])
def test_imports_point_down_the_layers(name: str, path: Path) -> None:
    unit = _unit(name)
    if not unit:
        return  # the package's own __init__ holds the version only
    assert unit in RANK, f"{name}: add its package to LAYERS"
    for target in _imports(name, path):
        target_unit = _unit(target)
        if target_unit and target_unit != unit:
            assert RANK[target_unit] <= RANK[unit], f"{name} imports {target}, which sits above it"


def test_no_import_circles() -> None:
    graph = {name: {target for target in _imports(name, path) if target in KNOWN} for name, path in MODULES}
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str, trail: tuple[str, ...]) -> None:
        if node in done:
            return
        assert node not in visiting, "import circle: " + " → ".join((*trail, node))
        visiting.add(node)
        for target in graph[node]:
            visit(target, (*trail, node))
        visiting.discard(node)
        done.add(node)

    for name in graph:
        visit(name, ())
