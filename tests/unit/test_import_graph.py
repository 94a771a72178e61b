"""The import graph of `backend` and `cli`: no import cycle, and no import from a lower layer to a higher one.

Run it alone with:

    .venv/bin/python -m pytest -q tests/unit/test_import_graph.py

The graph is grimp's (the library behind import-linter): every `import` statement of every module, those inside
functions and under `if TYPE_CHECKING:` included, read from the source without importing anything. A lazy import
inside a function is still a dependency, so it counts here as much as one at the top of a file.

LAYERS below is the one place where the architecture is written down (../shared/DESIGN.md, "Architecture to aim
for"), bottom to top. A module may import modules of its own layer entry and of the layers below it, never of a
layer above; the entries of a layer marked independent may not import each other either (the LLM clients and
retrieval know nothing of one another; settings and errors import nothing of the app). Each module belongs to
the entry that names the longest prefix of it (`pkg.__init__` names the package's own __init__ alone), and every
module must belong to one, so that a new package gets its place in the table instead of escaping the check.

The tests have one rule of their own: no module imports a test module or a conftest (helpers shared by several test
modules live in tests/support/, fixtures in a conftest.py, where pytest finds them without an import).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import grimp
import pytest

PACKAGES = ("backend", "cli")


@dataclass(frozen=True)
class Layer:
    """One row of the table: module names (each covering its submodules) and whether they may import each other."""

    modules: tuple[str, ...]
    independent: bool = False


# Bottom to top.
LAYERS = (
    # What everything may use: the package itself (its version), settings (read once, passed down) and the
    # error family. None of them imports any other module of the app.
    Layer(("backend.__init__", "backend.settings", "backend.errors"), independent=True),
    # The vocabulary of the domain and small leaf services over it.
    Layer(("backend.domain", "backend.answers", "backend.citations", "backend.redaction", "backend.disk_space",
           "backend.auth")),
    Layer(("backend.observability",)),
    # The two adapters to the outside: neither knows the other, and retrieval knows nothing of ingestion.
    Layer(("backend.llm", "backend.retrieval"), independent=True),
    Layer(("backend.ingest",)),
    Layer(("backend.rag",)),
    Layer(("backend.runtime",)),
    Layer(("backend.api",)),
    Layer(("backend.app",)),
    Layer(("backend.__main__",)),
    # The command-line tools drive the backend (in process or over HTTP); the backend never imports them.
    Layer(("cli",)),
)


@cache
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def layer_entry(module: str) -> tuple[int, str] | None:
    """(layer index, entry) for `module`: the entry `<module>.__init__` (a package's own __init__ alone), else the
    entry naming the longest prefix of it; None when no entry covers it."""
    found = None
    for index, layer in enumerate(LAYERS):
        for entry in layer.modules:
            if entry == f"{module}.__init__":
                return index, entry
            if (module == entry or module.startswith(entry + ".")) and (found is None or len(entry) > len(found[1])):
                found = (index, entry)
    return found


def imports_in(g: grimp.ImportGraph, importer: str, imported: str) -> str:
    """Where `importer` imports `imported`: `line N: statement`, one per import statement."""
    details = g.get_import_details(importer=importer, imported=imported)
    return "; ".join(f"line {d['line_number']}: {d['line_contents']}" for d in details)


def imports_of(importer: str, imported: str) -> str:
    return imports_in(graph(), importer, imported)


def direct_imports() -> list[tuple[str, str]]:
    g = graph()
    return sorted((m, imported) for m in g.modules for imported in g.find_modules_directly_imported_by(m))


def strongly_connected_components(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the graph is small, but recursion depth should not depend on it)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def cycle_through(start: str, component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """The shortest chain start -> ... -> start inside one strongly connected component (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges.get(node, ()) & component):
                if child == start:
                    chain = [node]
                    while chain[-1] != start:
                        chain.append(previous[chain[-1]])
                    return [start, *reversed(chain[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is on no cycle of its component")


def describe_chain(chain: list[str]) -> str:
    steps = [f"  {a} -> {b}   ({imports_of(a, b)})" for a, b in zip(chain, chain[1:])]
    return "\n".join(steps)


def test_no_import_cycle():
    edges: dict[str, set[str]] = {}
    for importer, imported in direct_imports():
        edges.setdefault(importer, set()).add(imported)
    cycles = [
        component
        for component in strongly_connected_components(set(graph().modules), edges)
        if len(component) > 1 or component[0] in edges.get(component[0], set())
    ]
    report = [
        f"cycle among {', '.join(component)}:\n{describe_chain(cycle_through(component[0], set(component), edges))}"
        for component in cycles
    ]
    assert not report, "import cycles (each shown as one chain through it):\n" + "\n".join(report)


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in graph().modules if layer_entry(m) is None)
    assert not unplaced, f"modules in no entry of LAYERS (give them their place in the table): {', '.join(unplaced)}"


def test_no_import_from_a_lower_layer_to_a_higher_one():
    violations = []
    for importer, imported in direct_imports():
        source, target = layer_entry(importer), layer_entry(imported)
        if source is None or target is None:
            continue  # reported by test_every_module_has_a_layer
        if target[0] > source[0]:
            why = f"layer {source[0]} ({source[1]}) imports layer {target[0]} ({target[1]}) above it"
        elif target[0] == source[0] and target[1] != source[1] and LAYERS[source[0]].independent:
            why = f"{source[1]} and {target[1]} are independent entries of layer {source[0]}"
        else:
            continue
        violations.append(f"{importer} -> {imported}: {why}\n    {imports_of(importer, imported)}")
    assert not violations, "imports against the layers (tests/unit/test_import_graph.py LAYERS):\n" + "\n".join(violations)


def test_no_test_module_is_imported():
    tests = grimp.build_graph("tests", cache_dir=None)
    imports = [
        f"{importer} imports {imported} ({imports_in(tests, importer, imported)})"
        for importer in sorted(tests.modules)
        for imported in sorted(tests.find_modules_directly_imported_by(importer))
        if imported.rsplit(".", 1)[-1].startswith("test_") or imported.rsplit(".", 1)[-1] == "conftest"
    ]
    assert not imports, "move what is shared into tests/support/ (fixtures into a conftest.py):\n" + "\n".join(imports)


@pytest.mark.parametrize("module", ["backend.settings", "backend.errors"])
def test_the_bottom_modules_import_nothing_of_the_app(module):
    """Settings are read once and passed down, errors are raised by every layer: neither may depend on any other
    module of the app (a lazy import inside a function included)."""
    imported = sorted(m for m in graph().find_modules_directly_imported_by(module) if m.split(".")[0] in PACKAGES)
    assert not imported, f"{module} imports " + "; ".join(f"{m} ({imports_of(module, m)})" for m in imported)
