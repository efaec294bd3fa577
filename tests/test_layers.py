"""The house's floors (docs/architecture.md): imports only run down, and never in a circle.

Every import in tinymix/ and lessons/ is read as text (ast), lazy ones inside functions included: a
module may import its own floor and the floors below it, never a floor above, and no chain of imports
may lead back to where it started. `python3 tests/test_layers.py` prints what it finds.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A name stands for that module or package and everything below it ("tinymix" alone is
# the package's __init__.py). A module that no floor names fails the test: a new one must be placed.
FLOORS = [
    ("engine", ["tinymix", "tinymix.backend", "tinymix.tensor", "tinymix.kernels", "tinymix.functional",
                "tinymix.gradient_check", "tinymix.nn", "tinymix.optim"]),
    ("store", ["tinymix.store"]),
    ("models", ["tinymix.transformer", "tinymix.decode", "tinymix.pretrained"]),
    ("method", ["tinymix.adamix", "tinymix.peft", "tinymix.methods", "tinymix.validate", "tinymix.neighbours",
                "tinymix.merging", "tinymix.surgery", "tinymix.mos"]),
    ("tasks", ["tinymix.train", "tinymix.selftrain", "tinymix.runfolder", "tinymix.data", "tinymix.probe", "tinymix.plots",
               "tinymix.e2e"]),
    ("lab", ["tinymix.experiments", "tinymix.export", "tinymix.bench", "tinymix.assignments",
             "tinymix.grading"]),
    ("cli", ["tinymix.cli", "tinymix.__main__", "tinymix.grade"]),
    ("lessons", ["lessons"]),
]


def module_files():
    """{module name: path} for tinymix/ and the lessons (lessons/*.py and lessons/exercises/)."""
    paths = list((ROOT / "tinymix").rglob("*.py")) + list((ROOT / "lessons").glob("*.py")) \
        + list((ROOT / "lessons" / "exercises").glob("*.py"))
    names = {}
    for path in paths:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports(modules):
    """{module: {imported module: first line}}, only imports of modules in `modules`."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                elif name.startswith("lessons.") and f"lessons.{base}" in modules:
                    base = f"lessons.{base}"          # the lessons import each other by bare name
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                if name.startswith("lessons.") and f"lessons.{target}" in modules:
                    target = f"lessons.{target}"
                while target and target not in modules:      # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.setdefault(target, node.lineno)
    return graph


def floor(module):
    """The index of the module's floor (the longest name that covers it), or None."""
    best = None
    for index, (_, names) in enumerate(FLOORS):
        for prefix in names:
            covers = module == prefix or (prefix != "tinymix" and module.startswith(prefix + "."))
            if covers and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def circles(graph):
    """Every strongly connected set of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def problems():
    modules = module_files()
    graph = imports(modules)
    unplaced = sorted(m for m in modules if floor(m) is None)
    upward = sorted(f"{modules[a].relative_to(ROOT)}:{line}: {a} ({FLOORS[floor(a)][0]}) imports "
                    f"{b} ({FLOORS[floor(b)][0]})"
                    for a, edges in graph.items() for b, line in edges.items()
                    if floor(a) is not None and floor(b) is not None and floor(b) > floor(a))
    return unplaced, upward, circles(graph)


def test_every_module_has_a_floor():
    unplaced, _, _ = problems()
    assert not unplaced, f"modules on no floor (add them to FLOORS): {unplaced}"


def test_imports_only_run_down():
    _, upward, _ = problems()
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(upward)


def test_no_import_circles():
    _, _, found = problems()
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(group) for group in found)


def test_the_checks_can_fail():
    """The reader itself: a circle and an upward import written on purpose are found."""
    assert circles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    assert floor("tinymix.cli") > floor("tinymix.tensor") and floor("tinymix.nowhere") is None


if __name__ == "__main__":
    unplaced, upward, found = problems()
    print(f"modules on no floor: {len(unplaced)}")
    for name in unplaced:
        print("  ", name)
    print(f"upward imports: {len(upward)}")
    for line in upward:
        print("  ", line)
    print(f"import circles: {len(found)}")
    for group in found:
        print(f"   {len(group)} modules: " + " ".join(group))


def missing_imports(modules=None):
    """Imports of a tinymix module that does not exist (one left behind by a move): 'file:line: name'."""
    modules = modules or module_files()
    found = []
    for name, path in modules.items():
        if not name.startswith("tinymix"):
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names if alias.name.startswith("tinymix")]
            elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("tinymix")):
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                wanted = [".".join(anchor + ([node.module] if node.module else []))]
            else:
                continue
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            found += [f"{where}:{node.lineno}: {w}" for w in wanted if w not in modules]
    return found


def test_every_import_of_the_package_names_a_module_that_exists(tmp_path):
    assert not missing_imports(), "imports of modules that do not exist:\n" + "\n".join(missing_imports())
    original = (ROOT / "tinymix" / "grading" / "cli.py").read_text()
    assert "from ..store.files import" in original                 # the check itself: a moved module
    stale = tmp_path / "cli.py"
    stale.write_text(original.replace("from ..store.files import", "from ..files import"))
    modules = {**module_files(), "tinymix.grading.cli": stale}
    assert any(line.endswith("tinymix.files") for line in missing_imports(modules))
