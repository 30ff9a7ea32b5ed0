"""The layer packages of ``landscape`` import only the layers below them (docs/architecture.md).

The reference is the layer order written in the architecture page; the test reads every import
statement of every library module (module level and inside functions) with ``ast``, so a lazy
import that goes upward is caught too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "landscape"

# lowest first; a module may import its own layer and any layer listed before it
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_checks", "_expr", "_forms", "_progress", "tolerances"),
    ("core",),
    ("theory",),
    ("recipe",),
    ("symbolic",),
    ("engine",),
    ("experiment",),
    ("numeric",),
    ("views",),
    ("cli",),
)
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "landscape" else None


def _imports(path: Path) -> list[tuple[int, str]]:
    mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    pkg = mod.rsplit(".", 1)[0] if path.name != "__init__.py" else mod.removesuffix(".__init__")
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names if base == "landscape"]
    return out


MODULES = sorted(p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG)


def test_every_layer_of_the_package_is_ranked() -> None:
    found = {p.name.removesuffix(".py") for p in PKG.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert found == set(RANK), "docs/architecture.md and LAYERS must name every top-level module"


def test_the_architecture_page_lists_the_same_order() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    listed = re.findall(r"^\d+\. `landscape[./]([a-z_]+)", page, flags=re.M)
    assert tuple(listed) == tuple(n for names in LAYERS for n in names if not n.startswith("_") and n != "tolerances")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    own = _layer(".".join(path.relative_to(ROOT).with_suffix("").parts))
    assert own in RANK
    bad = [f"line {line}: {name}" for line, name in _imports(path)
           if (layer := _layer(name)) is not None and layer in RANK and RANK[layer] > RANK[own]]
    assert not bad, f"{path.relative_to(ROOT)} ({own}) imports a higher layer: {bad}"
