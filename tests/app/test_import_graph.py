"""The import graph of ``uar``, ``operators`` and ``plugin``: no circles, every import one way.

Every ``import`` statement counts, also those inside functions and under ``TYPE_CHECKING``: a
lazy import only hides a circle, it does not remove it. Read with ``ast``, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("uar", "operators", "plugin")
# uar is the model package: no MONAI Deploy, no networking, no operators or application.
UAR_NEVER = ("monai", "holoscan", "pynetdicom", "socket", "http", "operators", "plugin")
# operators build on uar's public API, never on the application or on training code.
OPERATORS_NEVER = ("plugin", "uar.train", "uar.visual.train")
# uar.synthetic: one idea per module; a module imports only modules of a lower layer.
SYNTHETIC_LAYERS = {
    "case": 0,
    "jpeg_lossless": 0,
    "fmath": 0,
    "sampling": 1,
    "raster": 1,
    "report": 1,
    "anatomy": 2,
    "frontal": 3,
    "lateral": 3,
    "regions": 3,
    "render": 4,
    "dicom": 5,
    "dataset": 6,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p
        for pkg in PACKAGES
        for p in sorted((REPO / pkg).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def _imports(name: str, path: Path, is_package: bool) -> set[str]:
    """Dotted names imported by a module: ``import a.b`` -> a.b; ``from a import b`` -> a, a.b."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between our modules, every imported dotted name) per module."""
    modules = _modules()
    edges: dict[str, set[str]] = {}
    raw: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported = _imports(name, path, path.name == "__init__.py")
        raw[name] = imported
        edges[name] = {m for m in imported if m in modules and m != name}
    return edges, raw


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _hits(imported: set[str], banned: tuple[str, ...]) -> set[str]:
    return {m for m in imported if any(m == b or m.startswith(b + ".") for b in banned)}


def test_the_graph_is_read():
    edges, _ = _graph()
    assert {"uar.synthetic.dataset", "operators.sr_writer", "plugin.app"} <= set(edges)
    assert "uar.synthetic.render" in edges["uar.synthetic.dataset"]
    assert "operators.settings" in edges["operators.sr_writer"]


def test_no_import_circles():
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_a_detected_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_uar_never_imports_monai_networking_operators_or_plugin():
    _, raw = _graph()
    bad = {
        name: sorted(_hits(imported, UAR_NEVER))
        for name, imported in raw.items()
        if name.split(".")[0] == "uar"
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_operators_never_import_the_app_or_training_code():
    _, raw = _graph()
    bad = {
        name: sorted(_hits(imported, OPERATORS_NEVER))
        for name, imported in raw.items()
        if name.startswith("operators")
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_synthetic_modules_import_only_lower_layers():
    edges, _ = _graph()
    names = {n.rsplit(".", 1)[1] for n in edges if n.startswith("uar.synthetic.")}
    assert names == set(SYNTHETIC_LAYERS)  # a new module gets a layer here
    wrong = []
    for name, targets in edges.items():
        if not name.startswith("uar.synthetic."):
            continue
        layer = SYNTHETIC_LAYERS[name.rsplit(".", 1)[1]]
        for t in targets:
            if t == "uar.synthetic":
                wrong.append(f"{name} -> {t} (the package imports nothing; import the module)")
            elif t.startswith("uar.synthetic.") and SYNTHETIC_LAYERS[t.rsplit(".", 1)[1]] >= layer:
                wrong.append(f"{name} -> {t}")
    assert wrong == []
