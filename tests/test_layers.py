"""The stack points one way: every import of the package (function-level ones included) against a
declared layer order; no circles; no private name imported from another module; and no study
axis spelled by name in the study runner, results or report code (only in its declaration)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ticketx"

# Bottom to top. A module may import from its own layer or below, never from above. A package
# name stands for all its modules unless a module of it is listed on its own.
LAYERS: list[list[str]] = [
    ["ticketx", "errors"],
    ["steps", "registry", "interrupt", "distributed", "threads", "ui", "stats"],
    ["runtime", "store", "masks"],  # devices, determinism, every random stream; files; mask maths
    ["leases", "pruning", "sanity", "deconstruct", "criteria", "models", "ticket", "trackers"],  # trackers: optional tools, imported where used
    ["data"],
    ["baselines"],
    ["settings"],  # resolved settings: schemas and cross-field rules
    ["cohort"],  # many networks in one step (the trainer hands its cohorts down)
    ["train"],  # the trainer
    ["runs", "report"],  # done, or train it and record it; tables and files
    ["search", "transfer", "pai", "supermask", "stability", "compare"],  # the experiments
    ["study.axes"],
    ["study.cells"],
    ["study.claims", "study.load", "study.cohorts"],  # study.cohorts: which cells train together
    ["study.runner"],
    ["study.tables", "study.plots", "study.curves", "study.results"],
    ["study.expect", "study.worker", "study.local", "study.status", "study.slurm"],
    ["study"],
    ["cli"],
    ["__main__"],
]


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "ticketx"


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int:
    """The layer of a module: its own entry, else its closest package's."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        for i, layer in enumerate(LAYERS):
            if name in layer:
                return i
    raise AssertionError(f"ticketx.{module} is in no layer of tests/test_layers.py: add it")


def _imports(module: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names) for every import of ticketx in `module`, at any depth."""
    out = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "ticketx":
            target = node.module.removeprefix("ticketx").lstrip(".") or "ticketx"
            for alias in node.names:  # `from ticketx import store` imports the module ticketx.store
                sub = f"{target}.{alias.name}" if target != "ticketx" else alias.name
                out.append((node.lineno, sub if sub in MODULES else target, [alias.name]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ticketx":
                    out.append((node.lineno, alias.name.removeprefix("ticketx").lstrip(".") or "ticketx", []))
    return out


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_import_goes_up_a_layer():
    bad = []
    for module in MODULES:
        for line, target, _ in _imports(module):
            if target in MODULES and _layer(target) > _layer(module):
                bad.append(f"ticketx/{MODULES[module].relative_to(PACKAGE)}:{line}: {module} (layer {_layer(module)}) "
                           f"imports {target} (layer {_layer(target)})")
    assert not bad, "imports that go up the stack:\n" + "\n".join(bad)


def test_no_private_name_is_imported_from_another_module():
    bad = [f"{module}:{line}: {target}.{name}" for module in MODULES for line, target, names in _imports(module)
           for name in names if name.startswith("_") and not name.startswith("__")]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_no_circles():
    graph = {m: {t for _, t, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}
    # a package's __init__ re-exports its modules: an import of the package is not an edge into them
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if seen.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if t not in seen:
                visit(t)
        stack.pop()
        seen[m] = 2

    for m in sorted(MODULES):
        if m not in seen:
            visit(m)


# Where axes must not be spelled: the code that runs, summarises and draws any study.
GENERIC = ["study/cells.py", "study/cohorts.py", "study/runner.py", "study/results.py", "study/tables.py", "study/plots.py", "study/load.py",
           "study/curves.py"]


def _spelled(source: str) -> list[str]:
    """The axis columns and study-file keys `source` reads by name (lines marked `# not an axis:` aside)."""
    from ticketx.study.axes import AXES

    text = "\n".join(line for line in source.splitlines() if "# not an axis:" not in line)
    columns = {c for a in AXES.values() for c in (a.name, *a.columns)}
    keys = {(block, k) for a in AXES.values() for block, fields in a.fields.items() for k in fields}
    q = "[\"']"
    return sorted({c for c in columns if re.search(rf"([\w\])]\[|\.get\(|\.pop\()\s*{q}{re.escape(c)}{q}\s*[\],)]", text)}
                  | {f"{b}.{k}" for b, k in keys if re.search(rf"{q}{b}{q}\s*,\s*{q}{k}{q}", text)}
                  | {k for b, k in keys if b == "study" and re.search(rf"\(\s*{q}{k}{q}\s*,?\s*\)", text)})


def test_the_axis_check_sees_a_spelled_axis():
    assert _spelled('x = info["source"]\nr.get("seed")\nerr(("transfer", "seeds"))\nerr(("targets",))') == [
        "seed", "source", "targets", "transfer.seeds"]
    assert _spelled('COLUMNS = ["model", "a"]\nx = c["source"]  # not an axis: the cell\n') == []


@pytest.mark.parametrize("path", GENERIC)
def test_no_axis_is_named_outside_its_declaration(path):
    """An axis's columns are read as `x["column"]` / `x.get("column")` only in its own file, and its
    study-file keys (`("transfer", "seeds")`) too. A line that reads another field of the same name
    says so (`# not an axis: ...`)."""
    found = _spelled((PACKAGE / path).read_text())
    assert not found, f"ticketx/{path} spells the axes {found}: each axis says what it needs in its own file"
