"""The import graph: no cycles, layers that point one way, no reading of another module's private names.

What counts as an import: every ``import``/``from ... import`` anywhere in a file - at the top, inside
a function or method (a lazy import is still a dependency), and inside ``if TYPE_CHECKING:`` (an
annotation that needs the other module is still a dependency; move the shared type down instead) -
plus ``importlib.import_module("a.literal.name")``. Imports are resolved to modules
(``engine.live.engine``): ``from pkg import name`` points at ``pkg.name`` when that is a module, else
at ``pkg``; relative imports are resolved against the importing file's package. Importing
``a.b.c`` is an edge to ``a.b.c`` only (not also to the packages ``a`` and ``a.b`` Python runs first),
as import-linter and pydeps count them.

What is checked, over every ``.py`` file under engine/, mars_model/ and tools/:

- no import cycle between modules (a strongly connected component of more than one), and none
  between the engine's parts (``engine.live``, ``engine.synth``, ``engine.note_cache``, ... as nodes);
- the layers of house plan (docs/architecture.md) point one way (:data:`LAYERS`):
  ``engine.bindings`` (CLI, OSC) -> ``engine.live`` / ``engine.render`` -> ``engine.synth`` /
  ``engine.midi`` / ``engine.drivers`` / ``engine.note_cache`` / ``engine.preset`` / ``engine.model``
  -> ``mars_model``; ``mars_model`` never imports ``engine``, and the engine sees the model only
  through its public API (:data:`MODEL_API`);
- no module reads another module's private names (``from m import _x``; ``obj._x`` on
  anything but ``self``/``cls`` unless the module defines ``_x`` itself), bar the third-party ones
  in :data:`THIRD_PARTY_PRIVATE`;
- no engine or model function returns a tuple of four or more values (return a small dataclass).

Each check has a test of its own on a small made-up graph or source, so a failure here is real.
"""

from __future__ import annotations

import ast
import functools
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Top-level folders whose ``.py`` files make the graph (``tools/`` has no ``__init__.py``; its
#: scripts are named ``tools.<script>``).
PACKAGES = ("engine", "mars_model", "tools")

#: The layers, top first: a module may import its own layer and the ones below, never one above.
#: Peers in a layer may import each other (the cycle test keeps that one-way too).
LAYERS = (
    ("engine.bindings",),  # CLI, OSC: the ways people drive the engine
    ("engine.live", "engine.render"),  # live play; offline render
    ("engine.synth", "engine.midi", "engine.drivers", "engine.note_cache", "engine.preset", "engine.model",
     "engine.calibration"),
    ("mars_model",),
)
#: What the engine may import of the model package: its narrow public API, and the model-side
#: command-line front ends (``mars_model.commands``: ``train``, ``dataset``, ``codec`` and the option
#: helpers every subcommand shares) that the one ``mars-synth`` command offers. ``engine.model`` is the
#: one place that loads the model itself (``mars_model.generator``).
MODEL_API = ("mars_model", "mars_model.api", "mars_model.errors", "mars_model.commands")
MODEL_LOADER = "engine.model"

#: Private names of third-party libraries the engine uses on purpose, as (module, expression); each is
#: documented where it is used and in docs/architecture.md. Only third-party names belong here.
THIRD_PARTY_PRIVATE = {
    ("engine.drivers.audio", "sd._terminate"),  # sounddevice: release PortAudio before a JACK server stops
}


# --------------------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``importer`` imports ``imported`` at ``path:line``."""

    importer: str
    imported: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported}  ({_where(self.path)}:{self.line})"


def _where(path: Path) -> Path:
    """A path to print: relative to the repository when it is in it."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else Path(path.name)


@functools.cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def find_modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every module under ``root/<package>`` by dotted name (a package by its ``__init__.py``)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """``name`` or its longest prefix that is one of ours (``None``: a third-party or standard module)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imported_names(module: str, path: Path, node: ast.AST) -> Iterable[tuple[str, int]]:
    """The absolute module names one node imports (for ``from x import a, b``: ``x.a`` and ``x.b``)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, node.lineno
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        for alias in node.names:
            yield (prefix if alias.name == "*" else f"{prefix}.{alias.name}"), node.lineno
    elif isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            if isinstance(node.args[0].value, str) and not node.args[0].value.startswith("."):
                yield node.args[0].value, node.lineno


def find_imports(modules: Mapping[str, Path]) -> list[Import]:
    """Every import between our modules, lazy and ``TYPE_CHECKING`` ones included."""
    edges: list[Import] = []
    for module, path in modules.items():
        for node in ast.walk(_parse(path)):
            for name, line in _imported_names(module, path, node):
                target = _known(name, modules)
                if target is not None and target != module:
                    edges.append(Import(module, target, path, line))
    return edges


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one node, each sorted (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def import_cycles(edges: Iterable[Import]) -> list[tuple[list[str], list[Import]]]:
    """Each cycle (a strongly connected component) with the imports inside it."""
    edges = list(edges)
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
    cycles = []
    for component in strongly_connected(graph):
        members = set(component)
        inside = [e for e in edges if e.importer in members and e.imported in members]
        cycles.append((component, sorted(set(inside), key=str)))
    return cycles


def describe(cycles: list[tuple[list[str], list[Import]]]) -> str:
    """A readable report: one block per cycle, its imports with file and line."""
    blocks = []
    for component, inside in cycles:
        blocks.append(f"cycle through {', '.join(component)}\n"
                      + "\n".join(f"    {edge}" for edge in inside))  # fmt: skip
    return "\n".join(blocks)


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _layer(module: str) -> int | None:
    for depth, layer in enumerate(LAYERS):
        if any(_under(module, part) for part in layer):
            return depth
    return None


def layer_violations(edges: Iterable[Import]) -> list[Import]:
    """Imports that point up a layer (see :data:`LAYERS`)."""
    found = []
    for edge in edges:
        importer, imported = _layer(edge.importer), _layer(edge.imported)
        if importer is not None and imported is not None and imported < importer:
            found.append(edge)
    return found


def model_api_violations(edges: Iterable[Import]) -> list[Import]:
    """Engine imports of the model package beyond :data:`MODEL_API` (outside :data:`MODEL_LOADER`)."""
    return [e for e in edges if _under(e.importer, "engine") and _under(e.imported, "mars_model")
            and e.imported not in MODEL_API and e.importer != MODEL_LOADER]  # fmt: skip


# --------------------------------------------------------------------------------------- private names


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_private_names(tree: ast.AST) -> set[str]:
    """Private names a module defines itself: functions, classes, assignments, ``self._x = ...``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if _is_private(name)}


def private_uses(module: str, path: Path, source: str | None = None) -> list[str]:
    """Where a module reads another module's private names: ``from m import _x``, and ``obj._x`` on
    anything but ``self``/``cls`` when the module does not define ``_x`` itself (a module may
    touch the private state of its own classes' objects, e.g. in a classmethod)."""
    tree = ast.parse(source, filename=str(path)) if source is not None else _parse(path)
    own = _own_private_names(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or node.module != module):
            for alias in node.names:
                if _is_private(alias.name):
                    found.append((node.lineno, f"from {'.' * node.level}{node.module or ''} import {alias.name}"))
        elif isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr not in own:
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            text = ast.unparse(node)
            if (module, text) not in THIRD_PARTY_PRIVATE:
                found.append((node.lineno, text))
    return [f"{_where(path)}:{line}: {text}" for line, text in sorted(found)]


# --------------------------------------------------------------------------------------- named results


def long_tuple_returns(path: Path, size: int = 4) -> list[str]:
    """Functions returning a tuple of ``size`` or more values (a literal, or by annotation)."""
    found = []
    for func in ast.walk(_parse(path)):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) >= size:
                found.append(f"{_where(path)}:{node.lineno}: {func.name} returns {len(node.value.elts)} values")
        returns = func.returns
        if isinstance(returns, ast.Subscript) and ast.unparse(returns.value) in ("tuple", "Tuple"):
            items = returns.slice.elts if isinstance(returns.slice, ast.Tuple) else [returns.slice]
            if len(items) >= size and not any(isinstance(i, ast.Constant) and i.value is Ellipsis for i in items):
                found.append(f"{_where(path)}:{func.lineno}: {func.name} -> {ast.unparse(returns)}")
    return found


# --------------------------------------------------------------------------------------- the tests


def test_no_module_imports_itself_back_through_any_chain():
    cycles = import_cycles(find_imports(find_modules(ROOT)))
    assert not cycles, "import cycles (lazy and TYPE_CHECKING imports count):\n" + describe(cycles)


def test_the_engines_parts_do_not_import_each_other_in_a_circle():
    # One level up from modules: engine.live, engine.synth, engine.note_cache, ... as single nodes.
    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges = [Import(part(e.importer), part(e.imported), e.path, e.line) for e in find_imports(find_modules(ROOT))
             if _under(e.importer, "engine") and _under(e.imported, "engine") and part(e.importer) != part(e.imported)]  # fmt: skip
    cycles = import_cycles(edges)
    assert not cycles, "engine subsystems in a circle:\n" + describe(cycles)


def test_layers_point_one_way():
    violations = layer_violations(find_imports(find_modules(ROOT)))
    assert not violations, "imports that point up a layer:\n" + "\n".join(f"    {e}" for e in violations)


def test_the_engine_sees_the_model_only_through_its_public_api():
    violations = model_api_violations(find_imports(find_modules(ROOT)))
    assert not violations, (f"use {', '.join(MODEL_API)} (or load the model in {MODEL_LOADER}):\n"
                            + "\n".join(f"    {e}" for e in violations))  # fmt: skip


def test_no_module_reads_another_modules_private_names():
    modules = find_modules(ROOT, ["engine", "mars_model", "tools"])
    found = [use for module, path in modules.items() for use in private_uses(module, path)]
    assert not found, "private names read across modules (give the owner a public method):\n" + "\n".join(found)


def test_engine_and_model_functions_return_named_results_not_long_tuples():
    found = [hit for path in find_modules(ROOT, ["engine", "mars_model"]).values() for hit in long_tuple_returns(path)]
    assert not found, "return a small dataclass instead:\n" + "\n".join(found)


# --------------------------------------------------------------------------------------- the checks check


def _write_package(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_cycles_hidden_in_functions_type_checking_and_relative_imports_are_found(tmp_path):
    _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg import b\n",  # lazy, and `from pkg import <module>`
        "pkg/b.py": "from . import a\n",  # relative
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.d import D\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/d.py": "from ..e import x\n",
        "pkg/e.py": "import importlib\nimportlib.import_module('pkg.c')\nx = 1\n",
        "pkg/f.py": "import pkg.a\nimport os\nfrom pkg.sub import d\n",  # leads into cycles, is in none
    })  # fmt: skip
    edges = find_imports(find_modules(tmp_path, ["pkg"]))
    cycles = import_cycles(edges)
    assert [component for component, _ in cycles] == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.e", "pkg.sub.d"]]
    report = describe(cycles)
    assert "pkg.a -> pkg.b  (a.py:2)" in report and "pkg.b -> pkg.a  (b.py:1)" in report
    assert "pkg.c -> pkg.sub.d  (c.py:3)" in report and "pkg.e -> pkg.c  (e.py:2)" in report
    assert "pkg.f" not in report


def test_the_cycle_finder_on_small_graphs():
    assert strongly_connected({"a": ["b"], "b": ["c"], "c": []}) == []
    assert strongly_connected({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert strongly_connected({"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c", "a"]}) == [["a", "b"], ["c", "d"]]
    chain = {str(i): [str(i + 1)] for i in range(5000)}  # deep: no recursion limit
    assert strongly_connected(chain) == []
    assert strongly_connected({**chain, "5000": ["0"]}) == [sorted(str(i) for i in range(5001))]


def test_upward_imports_are_reported():
    edges = [Import("engine.live.engine", "engine.bindings.osc", Path("engine.py"), 3),
             Import("engine.drivers.midi_in", "engine.live.threads", Path("midi_in.py"), 9),
             Import("engine.note_cache", "engine.live.generation", Path("note_cache.py"), 5),
             Import("engine.synth.voice", "engine.render", Path("voice.py"), 4),
             Import("mars_model.api", "engine.model", Path("api.py"), 1),
             Import("engine.bindings.osc", "engine.live.events", Path("osc.py"), 2),
             Import("engine.live.engine", "engine.render", Path("engine.py"), 7),
             Import("engine.midi.dispatch", "engine.synth.synth", Path("dispatch.py"), 8),
             Import("engine.livewire", "engine.bindings.osc", Path("livewire.py"), 2),
             Import("tools.bench_latency", "engine.live.engine", Path("bench_latency.py"), 2)]  # fmt: skip
    assert [e.importer for e in layer_violations(edges)] == [
        "engine.live.engine", "engine.drivers.midi_in", "engine.note_cache", "engine.synth.voice", "mars_model.api"]  # fmt: skip


def test_engine_imports_of_the_model_beyond_its_api_are_reported():
    edges = [Import("engine.render", "mars_model.api", Path("render.py"), 1),
             Import("engine.model", "mars_model.generator", Path("model.py"), 2),
             Import("engine.live.engine", "mars_model.generator", Path("engine.py"), 3),
             Import("tools.bench_generate", "mars_model.generator", Path("bench_generate.py"), 4)]  # fmt: skip
    assert [e.importer for e in model_api_violations(edges)] == ["engine.live.engine"]


def test_private_names_of_other_modules_are_reported():
    source = textwrap.dedent("""
        from engine.note_cache import _programs, NoteCache
        import sounddevice as sd

        class Maker:
            def __init__(self, cache):
                self._cache = cache
                self.cache = cache

            def make(self, other):
                other._cache  # this module's own attribute: allowed
                self._cache.fill([])
                return self.cache._notes, self.__class__, cache._source()

        def stop():
            sd._terminate()
    """)
    found = private_uses("engine.live.fake", Path("fake.py"), source)
    assert found == ["fake.py:2: from engine.note_cache import _programs", "fake.py:13: cache._source",
                     "fake.py:13: self.cache._notes", "fake.py:16: sd._terminate"]  # fmt: skip
    assert "audio.py:16: sd._terminate" not in private_uses("engine.drivers.audio", Path("audio.py"), source)


def test_long_tuple_returns_are_reported(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(textwrap.dedent("""
        def four():
            return 1, 2, 3, 4
        def three() -> tuple[int, int, int]:
            return 1, 2, 3
        def annotated() -> tuple[int, str, float, bytes]:
            ...
        def any_length() -> tuple[int, ...]:
            return (1, 2, 3, 4, 5)
    """))
    assert long_tuple_returns(path) == ["m.py:3: four returns 4 values", "m.py:6: annotated -> tuple[int, str, float, bytes]",
                                        "m.py:9: any_length returns 5 values"]  # fmt: skip
