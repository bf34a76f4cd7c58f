"""The package's shape: data flows one way from the CLI to the library, and no import cycle hides in a function.

Every ``import`` statement of every module is read from its source (module level and inside
functions alike), so a cycle cannot hide behind a function-level import.
"""

import ast
from pathlib import Path

import lorita

ROOT = Path(lorita.__file__).parent


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """lorita modules ``path`` imports, resolved to modules (``from lorita.x import y``: ``lorita.x.y`` if a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lorita"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "lorita":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, name, set(mods)) for name, path in mods.items()}


def test_only_the_cli_imports_the_cli():
    offenders = {name: sorted(m for m in deps if m.startswith("lorita.cli"))
                 for name, deps in graph().items() if not name.startswith("lorita.cli") and name != "lorita.__main__"}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycles_even_inside_functions():
    g = graph()
    # Tarjan's strongly connected components; a package __init__ that re-exports its own
    # submodules is the one allowed loop (lorita.train -> lorita.train.loop -> lorita.train.config).
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            sccs.append(comp)

    for v in g:
        if v not in index:
            visit(v)
    cycles = [sorted(c) for c in sccs if len(c) > 1]
    assert cycles == []


def test_the_workflow_layer_sits_between_library_and_cli():
    g = graph()
    core = [m for m in g if not m.startswith(("lorita.runs", "lorita.cli", "lorita.report")) and m != "lorita"]
    leaks = {m: sorted(d for d in g[m] if d.startswith("lorita.runs")) for m in core}
    assert {k: v for k, v in leaks.items() if v} == {}
