"""The library's dependency graph points one way: config → body → models → data → eval → train → experiments.

Every `import` in reid3dsl (top-level or inside a function) is read from the source, so an upward import fails
here the day it is written, not the day it makes a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reid3dsl"
# Lower layers never import higher ones; modules of one layer do not import each other across packages.
LAYERS = {
    "errors": 0, "log": 0,
    "config": 1, "precision": 1, "profiling": 1,
    "body": 2,
    "models": 3, "losses": 3,
    "data": 4,
    "eval": 5,
    "train": 6,
    "experiments": 7,
}


def _imports(package: Path) -> list[tuple[str, str, str]]:
    """(file, importing top-level part of the package, imported module) for every import in `package`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel == Path("__init__.py"):
            continue  # the package's facade re-exports the public API lazily
        part = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(str(rel), part, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((str(rel), part, node.module))
    return found


def test_every_library_part_has_a_layer() -> None:
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.name != "__init__.py"
             and (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert parts == set(LAYERS), f"give each library part a layer: {sorted(parts ^ set(LAYERS))}"


def _upward(package: Path) -> list[str]:
    upward = []
    for file, part, module in _imports(package):
        top, _, rest = module.partition(".")
        if top == "shards":
            upward.append(f"{file}: imports {module} (the library never imports the shards CLI)")
        if top != "reid3dsl" or not rest:
            continue
        target = rest.split(".")[0]
        if target != part and LAYERS[target] >= LAYERS[part]:
            upward.append(f"{file}: imports {module} ({part} is layer {LAYERS[part]}, {target} layer {LAYERS[target]})")
    return upward


def test_no_library_module_imports_a_higher_layer_or_the_shards_tool() -> None:
    upward = _upward(PACKAGE)
    assert not upward, "\n".join(upward)


def test_an_upward_import_inside_a_function_is_caught(tmp_path: Path) -> None:
    (tmp_path / "body").mkdir()
    (tmp_path / "body" / "x.py").write_text("def f():\n    from reid3dsl.train.loop import train_step\n")
    (tmp_path / "eval.py").write_text("import shards.synth\nfrom reid3dsl.data import schema\n")
    assert _upward(tmp_path) == [
        "body/x.py: imports reid3dsl.train.loop (body is layer 2, train layer 6)",
        "eval.py: imports shards.synth (the library never imports the shards CLI)",
    ]
