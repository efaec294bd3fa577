"""The student stubs repeat the registry exactly: `stub_source` prints a task's stub as the registry
defines it, `check_stubs` lists where a stub file differs (def line, docstring, body, strangers)."""
import ast
import inspect
import textwrap
from pathlib import Path

from ..assignments import ASSIGNMENTS

STUB_DIR = Path(__file__).resolve().parent.parent.parent / "lessons" / "assignments"


def _function_node(function):
    return ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]


def stub_source(task):
    """The stub of a task, as the registry defines it: the reference's def line and docstring, and a
    body that raises NotImplementedError with the task's message."""
    source = textwrap.dedent(inspect.getsource(task.reference))
    node = ast.parse(source).body[0]
    def_line = "\n".join(source.splitlines()[:node.body[0].lineno - 1])     # as written, defaults too
    doc = ast.get_docstring(node, clean=False)
    lines = textwrap.wrap(task.stub_message, 88, drop_whitespace=False, break_on_hyphens=False)
    assert "".join(lines) == task.stub_message and '"' not in task.stub_message
    message = "\n".join(f'        "{line}"' for line in lines)
    return (f"{def_line}\n"
            f'    """{doc}"""\n'
            f"    raise NotImplementedError(\n{message})\n")


def check_stubs(directory=STUB_DIR):
    """Problems (strings) where a student file in `directory` differs from the registry: a missing
    stub, a def line or docstring that drifted, a body that is more than the stub's raise, a function
    that is no task. An empty list means every stub is exact."""
    problems = []
    for a in ASSIGNMENTS:
        path = Path(directory) / a.filename
        if not path.exists():
            problems.append(f"{a.id}: {path} does not exist")
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        defined = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        for node in ast.walk(tree):
            for module in _refused_imports(node, a.library):
                problems.append(f"{path.name} line {node.lineno}: imports {module}, which the grader refuses "
                                f"in {a.id}")
        tasks = {t.name: t for t in a.tasks}
        for name in defined:
            if name not in tasks:
                problems.append(f"{path.name}: defines {name}, which is no task of {a.id}")
        for task in a.tasks:
            node = defined.get(task.name)
            where = f"{path.name} {task.id} {task.name}"
            if not isinstance(node, ast.FunctionDef):
                problems.append(f"{where}: no stub")
                continue
            reference = _function_node(task.reference)
            if ast.unparse(node.args) != ast.unparse(reference.args):
                problems.append(f"{where}: def line ({ast.unparse(node.args)}) differs from the registry's "
                                f"({ast.unparse(reference.args)})")
            if ast.get_docstring(node) != ast.get_docstring(reference):
                problems.append(f"{where}: docstring differs from the registry's")
            if _stub_message(node) != task.stub_message:
                problems.append(f"{where}: the body must be only the docstring and "
                                f"raise NotImplementedError({task.stub_message!r})")
    return problems


def _refused_imports(node, library):
    """The tinymix modules an import statement names that `library` does not hold."""
    if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module == "tinymix" and node.level == 0:
        modules = [f"tinymix.{alias.name}" for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        modules = [node.module]
    else:
        return []
    refused = []
    for module in modules:
        parts = module.split(".")
        if parts[0] != "tinymix" or len(parts) == 1:
            continue
        exported = parts[1] in ("Tensor", "no_grad", "is_grad_enabled", "stack", "concatenate", "where",
                                "gradcheck", "manual_seed", "set_backend")   # tinymix/__init__'s names
        if parts[1] not in library and not (exported and "tensor" in library):
            refused.append(module)
    return refused


def _stub_message(node):
    """The message of a body that is [docstring, raise NotImplementedError("...")], else None."""
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or not isinstance(body[0].exc, ast.Call):
        return None
    call = body[0].exc
    if getattr(call.func, "id", None) != "NotImplementedError" or len(call.args) != 1 or call.keywords:
        return None
    return call.args[0].value if isinstance(call.args[0], ast.Constant) else None
