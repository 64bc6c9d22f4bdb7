"""Imports run one way (DESIGN.md, "Layers"): the module import graph of ``rlenv``, ``verifiers``,
``trainers`` and ``tasks``, read from the source with the standard library's ``ast``, has no cycle,
and no module imports one of a higher layer — not even lazily inside a function.

How the graph is built (what one module's execution may execute):

- every ``import`` / ``from … import`` anywhere in the file counts, inside functions too, and so does
  ``importlib.import_module("constant.name")``; relative imports are resolved;
- importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``: those edges count, except to
  the importing module's own ancestor packages, which Python has always initialised before the
  module runs;
- a package ``__init__`` that exports names lazily (PEP 562 ``__getattr__``) declares them in a
  module-level table (``_EXPORTS`` / ``_LAZY``: name -> submodule, or ``(module, attr)``;
  ``_SUBMODULES``: lazily loaded submodules). ``from pkg import Name`` and ``pkg.Name`` then count
  as imports of the module that defines ``Name`` — the importer is who runs it — and the body of
  ``__getattr__`` is not an import of the package itself;
- imports under ``if TYPE_CHECKING:`` never run and are left out.

Plugin loading (entry points, ``"module:attr"`` strings in registrations) imports modules named by
data, not by code: it is not an edge, which is the point of registering built-ins that way.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rlenv", "verifiers", "trainers", "tasks")
LAZY_TABLES = ("_EXPORTS", "_LAZY")

#: the layers, lowest first: a module may import its own layer and those below, never above.
#: rlenv modules are placed one by one (the package holds several layers); the other packages whole.
LAYERS = [
    ("core", ["rlenv", "rlenv.core", "rlenv.parsers", "rlenv.plugins", "rlenv.chat", "rlenv.jsonl",
              "rlenv.sources", "rlenv.models"]),
    ("verifiers", ["verifiers"]),
    ("envs", ["rlenv.env", "rlenv.registry", "rlenv.checker"]),
    ("tasks", ["tasks"]),
    ("rollout", ["rlenv.engines", "rlenv.batch", "rlenv.rollout", "rlenv.rollout_metrics", "rlenv.evaluation",
                 "rlenv.curriculum"]),
    ("trainers", ["trainers"]),
    ("top", ["rlenv.spec", "rlenv.runspec", "rlenv.cli", "rlenv.__main__", "rlenv.audit", "trainers.pipeline"]),
]


def _modules() -> dict:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


MODULES = _modules()


def _deepest_module(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _lazy_table(pkg: str) -> dict:
    """``{public name: defining module}`` of a package's PEP 562 table (empty when it has none)."""
    path = MODULES.get(pkg)
    if path is None or path.name != "__init__.py":
        return {}
    table = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name, value = node.targets[0].id, node.value
        if name in LAZY_TABLES and isinstance(value, ast.Dict):
            for k, v in zip(value.keys, value.values):
                target = ast.literal_eval(v)
                target = target[0] if isinstance(target, tuple) else target
                table[ast.literal_eval(k)] = target if "." in target else f"{pkg}.{target}"
        elif name == "_SUBMODULES":
            table.update({sub: f"{pkg}.{sub}" for sub in ast.literal_eval(value)})
    return table


def _type_checking_nodes(tree: ast.AST) -> set:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _lazy_getattr_nodes(tree: ast.Module, is_lazy_package: bool) -> set:
    if not is_lazy_package:
        return set()
    return {id(n) for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
            for n in ast.walk(f)}


def _targets(module: str, path: Path) -> set:
    """Every module of the four packages that executing ``module`` may execute (see the docstring)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    skip = _type_checking_nodes(tree) | _lazy_getattr_nodes(tree, is_pkg and bool(_lazy_table(module)))
    bound = {}  # local name -> package, for `import pkg` followed by `pkg.Name`
    names = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                names.append(a.name)
                bound[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.append(prefix)
            for a in node.names:
                names.append(_lazy_table(prefix).get(a.name, f"{prefix}.{a.name}"))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in
              ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            names.append(node.args[0].value)
    for node in ast.walk(tree):  # pkg.Name through a lazy table
        if (id(node) not in skip and isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in bound and node.attr in _lazy_table(bound[node.value.id])):
            names.append(_lazy_table(bound[node.value.id])[node.attr])
    out = set()
    for name in names:
        target = _deepest_module(name)
        if target is None:
            continue
        parts = target.split(".")
        for i in range(1, len(parts) + 1):  # the target and every package __init__ on the way to it
            t = ".".join(parts[:i])
            if t in MODULES and t != module and not module.startswith(t + "."):
                out.add(t)
    return out


GRAPH = {m: _targets(m, p) for m, p in MODULES.items()}


def _cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan): one cycle through each,
    and the component's size."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(_path_through(graph, comp), len(comp)) for comp in comps]


def _path_through(graph: dict, comp: set) -> list:
    """One concrete cycle inside a strongly connected component: a -> b -> … -> a."""
    start = min(comp)
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return path[::-1] + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def _layer(module: str) -> int | None:
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and p.count(".") > depth:
                best, depth = i, p.count(".")
    return best


def test_the_graph_is_read_from_the_source():
    assert len(MODULES) > 50 and all(pkg in MODULES for pkg in PACKAGES)
    # the edges this test exists for: a bottom-layer import runs its package's __init__, and a lazy
    # export counts as an import of the module that defines the name
    assert "rlenv" in GRAPH["verifiers.format"] and "rlenv.parsers" in GRAPH["verifiers.format"]
    assert "rlenv.registry" in GRAPH["tasks.arithmetic"]  # `rlenv.register(...)` through rlenv's table
    assert "rlenv.rollout" in GRAPH["trainers.online"]  # an import inside a function


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(
        f"{' -> '.join(path)}  ({n} modules import each other in this knot)" for path, n in cycles)


def test_no_module_imports_a_higher_layer():
    unplaced = sorted(m for m in MODULES if _layer(m) is None)
    assert not unplaced, f"modules without a layer (add them to LAYERS in {Path(__file__).name}): {unplaced}"
    bad = [f"{m} ({LAYERS[_layer(m)][0]}) imports {t} ({LAYERS[_layer(t)][0]})"
           for m in sorted(GRAPH) for t in sorted(GRAPH[m])
           if LAYERS[_layer(m)][0] != "top" and _layer(t) > _layer(m)]
    assert not bad, "a lower layer imports a higher one:\n" + "\n".join(bad)


def test_builtins_are_registered_as_plugins():
    """The core names no built-in: the tasks package and the built-in verifier modules are entry
    points, found from the installed metadata or, in a source checkout, from its pyproject.toml."""
    from rlenv.plugins import ENV_GROUP, VERIFIER_GROUP, _entry_points

    assert "tasks" in {ep.value for ep in _entry_points(ENV_GROUP)}
    builtin = {"verifiers.format", "verifiers.math", "verifiers.code", "verifiers.reward_model"}
    assert builtin <= {ep.value for ep in _entry_points(VERIFIER_GROUP)}
    assert not any(t == "tasks" or t.startswith("tasks.") for m in GRAPH if m.startswith("rlenv.") and
                   _layer(m) < _layer("tasks") for t in GRAPH[m])
