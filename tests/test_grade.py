"""The assignments' grader: the answer key scores full marks, correct solutions written with what each
assignment allows score full marks through the isolated process, untouched stubs score zero as "not
started", a wrong solution loses exactly its task's points with a useful message, and the student
stubs cannot drift from the registry. (tests/test_grade_attacks.py: what a hostile file cannot do;
tests/test_grade_class.py: a class folder, hidden cases, partial credit, the package.)"""
import dataclasses
import importlib.util
import inspect
import json
import shutil
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tinymix import Tensor, backend, grade
from tinymix import functional as F
from tinymix.assignments import (ASSIGNMENTS, Draw, assignment, layer_norm_forward, multi_head_attention, rand,
                                 scaled_dot_product_attention, split_heads)
from tinymix.assignments import layer_norm_backward as reference_layer_norm_backward
from tinymix.assignments.checks import GRADCHECK_RTOL, central_differences, gradcheck_case
from tinymix.grading import judge, stubs
from tinymix.grading.cli import grade_file
from tinymix.transformer import Attention, TransformerConfig

STUBS = stubs.STUB_DIR
SOLUTIONS = Path(__file__).parent / "solutions"


def write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def solution_with(tmp_path, filename, function_source):
    """The correct solution file with one function replaced by `function_source`."""
    source = (SOLUTIONS / filename).read_text()
    name = function_source.split("def ", 1)[1].split("(", 1)[0]
    start = source.index(f"def {name}(")
    end = source.find("\n\n\ndef ", start)
    source = source[:start] + textwrap.dedent(function_source).strip() + "\n" + (source[end:] if end >= 0 else "")
    return write(tmp_path, filename, source)


def by_id(graded):
    return {r.task.id: r for r in graded.results}


# ---- the promises -------------------------------------------------------------------------------------

@pytest.mark.parametrize("assignment_id", [a.id for a in ASSIGNMENTS])
def test_the_reference_solutions_score_full_marks_quickly(assignment_id, backend_name):
    a = assignment(assignment_id)
    start = time.perf_counter()
    results = judge.grade_reference(a)
    seconds = time.perf_counter() - start
    assert {r.task.id: r.failures for r in results if r.status != "passed"} == {}
    assert sum(r.score for r in results) == a.points
    assert all(r.passed == r.total > 0 for r in results)
    assert seconds < 10, f"grading {assignment_id} took {seconds:.1f} s"


def test_correct_solutions_score_full_marks_through_their_own_process_in_seconds(capsys):
    """tests/solutions/ answers every task with only what its assignment allows (xp alone in A1 and A2),
    so the guard refuses nothing a real solution needs, and grading all five takes seconds."""
    start = time.perf_counter()
    assert grade.main(sorted(map(str, SOLUTIONS.glob("a*.py")))) == 0
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    for a in ASSIGNMENTS:
        assert f"total {'':<{max(len(t.name) for t in a.tasks)}}   10 / 10" in out, a.id
    assert seconds < 30, f"grading the five solutions took {seconds:.1f} s"


def test_untouched_stubs_score_zero_with_every_task_not_started(tmp_path):
    report = tmp_path / "stubs.json"
    assert grade.main([str(STUBS), "--json", str(report)]) == 1
    files = {Path(f["file"]).name: f for s in json.loads(report.read_text())["students"] for f in s["files"]}
    assert sorted(files) == sorted(a.filename for a in ASSIGNMENTS)
    for a in ASSIGNMENTS:
        tasks = files[a.filename]["tasks"]
        assert [t["status"] for t in tasks] == ["not started"] * len(a.tasks), a.id
        assert sum(t["score"] for t in tasks) == 0 and all(not t["failures"] for t in tasks)


WRONG_LAYER_NORM = """
    def layer_norm_backward(g, xhat, rstd, weight):
        dxhat = g * weight
        dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True))   # the path through rstd is missing
        lead = tuple(range(g.ndim - 1))
        return dx, (g * xhat).sum(axis=lead), g.sum(axis=lead)
"""


def test_a_layer_norm_backward_missing_a_term_loses_exactly_that_tasks_points(tmp_path):
    graded = grade_file(solution_with(tmp_path, "a2_softmax_layernorm.py", WRONG_LAYER_NORM))
    results = by_id(graded)
    assert {i: r.status for i, r in results.items()} == {
        "A2.1": "passed", "A2.2": "passed", "A2.3": "passed", "A2.4": "failed"}
    assert graded.score == graded.assignment.points - results["A2.4"].task.points
    label, message = results["A2.4"].failures[0]
    assert label.startswith("x (4, 6)")                                 # which input
    assert message.startswith("dx: expected ")                          # which output ...
    assert ", got " in message and "max |got - expected| = " in message   # ... expected vs got, max diff
    # dweight and dbias are right: only dx is reported, on every case and against central differences
    messages = [m for _, m in results["A2.4"].failures]
    assert all(m.startswith(("dx:", "central differences disagree: dx:")) for m in messages)
    assert any(m.startswith("central differences disagree: dx: expected") for m in messages)


def test_stub_signatures_and_docstrings_match_the_registry():
    assert stubs.check_stubs() == []
    for a in ASSIGNMENTS:   # the same, seen through the imported functions rather than the syntax tree
        spec = importlib.util.spec_from_file_location(f"stub_{a.id}", STUBS / a.filename)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for task in a.tasks:
            stub = getattr(module, task.name)
            assert inspect.signature(stub) == inspect.signature(task.reference), task.id
            assert inspect.getdoc(stub) == inspect.getdoc(task.reference), task.id
            with pytest.raises(NotImplementedError, match=f"^Task {task.id}: .+ — hint: "):
                stub(*[None] * len(inspect.signature(stub).parameters))


def test_every_stub_file_names_the_lessons_that_prepare_for_it():
    readme = (STUBS / "README.md").read_text()
    for a in ASSIGNMENTS:
        head = (STUBS / a.filename).read_text()[:600]
        assert f"Do it {a.after} (`python3 lessons/run.py {a.lessons[:2]}`" in head, a.id
        assert f"| {a.after} |" in readme, a.id


# ---- stubs: checking and printing ---------------------------------------------------------------------

def test_check_stubs_reports_drift_solutions_and_strangers(tmp_path):
    for a in ASSIGNMENTS:
        shutil.copy(STUBS / a.filename, tmp_path / a.filename)
    a2 = tmp_path / "a2_softmax_layernorm.py"
    source = a2.read_text()
    source = source.replace("def layer_norm_forward(x, weight, bias, eps=1e-5):",
                            "def layer_norm_forward(x, weight, bias, eps=1e-6):")
    source = source.replace("all a fused\n    softmax keeps", "all a fused\n    softmax stores")
    solved = stubs.stub_source(assignment("A2").tasks[3])
    source = source.replace(solved, solved.split("    raise")[0] + "    return g, g, g\n")
    source += "\n\ndef helper():\n    pass\n"
    a2.write_text(source)
    (tmp_path / "a5_adamix.py").write_text((tmp_path / "a5_adamix.py").read_text()
                                           + "\nfrom tinymix.assignments import symmetric_kl\n")
    (tmp_path / "a1_autograd.py").write_text((tmp_path / "a1_autograd.py").read_text()
                                             + "\nfrom tinymix import Tensor\n")
    (tmp_path / "a4_adapter_lora.py").unlink()

    problems = "\n".join(stubs.check_stubs(tmp_path))
    assert "A2.3 layer_norm_forward: def line (x, weight, bias, eps=1e-06) differs" in problems
    assert "A2.1 softmax_backward: docstring differs" in problems
    assert "A2.4 layer_norm_backward: the body must be only the docstring and raise" in problems
    assert "defines helper, which is no task of A2" in problems
    assert "a5_adamix.py line" in problems
    assert "imports tinymix.assignments, which the grader refuses in A5" in problems
    assert "imports tinymix.Tensor, which the grader refuses in A1" in problems
    assert "A4:" in problems and "does not exist" in problems
    assert len(problems.splitlines()) == 7


def test_printed_stubs_are_the_ones_in_the_student_files():
    for a in ASSIGNMENTS:
        text = (STUBS / a.filename).read_text()
        for task in a.tasks:
            assert stubs.stub_source(task) in text, task.id


# ---- statuses and messages ------------------------------------------------------------------------------

def test_a_crash_is_an_error_that_names_the_line_and_grading_goes_on(tmp_path):
    path = write(tmp_path, "a1_autograd.py", """
        def unbroadcast(grad, shape):
            raise NotImplementedError("Task A1.1: not yet")


        def mul_backward(g, a, b):
            return g.reshape(7, 7), g


        def sum_backward(g, shape, axis=None, keepdims=False):
            return unbroadcast(g, shape)


        def matmul_backward(g, a, b):
            raise NotImplementedError
    """)
    results = by_id(grade_file(path))
    assert results["A1.1"].status == "not started"
    assert results["A1.2"].status == "error"
    assert "ValueError: cannot reshape" in results["A1.2"].failures[0][1]
    assert "a1_autograd.py line 7: return g.reshape(7, 7), g" in results["A1.2"].failures[0][1]
    assert results["A1.3"].status == "error"      # depends on an unfinished task: said so, not "not started"
    assert "it calls A1.1, which is not started yet" in results["A1.3"].failures[0][1]
    assert results["A1.4"].status == "not started"    # a bare NotImplementedError counts too
    assert sum(r.score for r in results.values()) == 0


def test_missing_functions_and_changed_signatures_are_named(tmp_path):
    path = write(tmp_path, "mine.py", """
        def split_heads(x, heads):
            return x


        def scaled_dot_product_attention(q, k, v, mask_bias):
            raise NotImplementedError("Task A3.2: ...")
    """)
    graded = grade_file(path)          # no known file name: told by the functions it defines
    assert graded.assignment.id == "A3"
    results = by_id(graded)
    assert results["A3.1"].status == "error"
    assert "signature split_heads(x, heads) differs from the task's split_heads(x, num_heads)" in \
        results["A3.1"].failures[0][1]
    assert results["A3.2"].status == "not started"
    assert results["A3.3"].status == "missing"


def test_a_missing_stop_gradient_has_the_right_value_and_fails_on_gradients(tmp_path):
    path = write(tmp_path, "a5_adamix.py", """
        from tinymix import functional as F


        def symmetric_kl(p_logits, q_logits):
            def kl(target, source):       # no .detach() on the target
                log_t, log_s = F.log_softmax(target), F.log_softmax(source)
                return (log_t.exp() * (log_t - log_s)).sum(axis=-1).mean()
            return (kl(q_logits, p_logits) + kl(p_logits, q_logits)) * 0.5
    """)
    result = by_id(grade_file(path, only={"A5.3"}))["A5.3"]
    assert result.status == "failed"
    messages = [m for _, m in result.failures]
    assert not any(m.startswith("output:") for m in messages)
    assert messages[0].startswith("d/dp: expected")


def test_a_graph_that_is_cut_says_no_gradient_arrived(tmp_path):
    path = write(tmp_path, "a3_attention.py", """
        from tinymix.tensor import Tensor


        def split_heads(x, num_heads):
            B, T, C = x.shape
            return Tensor(x.data.reshape(B, T, num_heads, C // num_heads).transpose(0, 2, 1, 3), dtype=x.dtype)
    """)
    result = by_id(grade_file(path, only={"A3.1"}))["A3.1"]
    assert result.status == "failed"
    assert result.failures[0][1].startswith("d/dx: no gradient reached this input")


def test_gradient_checks_use_central_differences_not_the_reference():
    x, g = rand((3, 4), 0), rand((3, 4), 1)
    softmax = lambda x: F.softmax(Tensor(x, dtype=x.dtype)).data
    y = softmax(x)
    (numeric,) = central_differences(softmax, g, {"x": x})
    analytic = y * (g - (g * y).sum(axis=-1, keepdims=True))
    host = backend.to_numpy                                               # compared on the host (any backend)
    np.testing.assert_allclose(host(numeric), host(analytic), rtol=GRADCHECK_RTOL, atol=1e-7)
    assert not np.allclose(host(numeric), host(g * y), rtol=GRADCHECK_RTOL)   # a wrong formula is told apart
    case = gradcheck_case("softmax", (g, y), softmax, g, {"x": x})
    assert case.against == "central differences" and case.expected is not None


# ---- the registry agrees with the library ---------------------------------------------------------------

def test_attention_references_compose_to_the_library_attention_module():
    """A3.1 and A3.2 have no library function of their own: composed, they must give Attention."""
    B, T, C, H = 2, 3, 8, 2
    x = Tensor(rand((B, T, C), 0), dtype=np.float64)
    attention = Attention(TransformerConfig(hidden_size=C, num_heads=H, dropout=0.0)).eval()
    params = {}
    for name in ("query", "key", "value", "output"):
        layer = getattr(attention, name)
        params[f"{name}.weight"] = Tensor(layer.weight.data.astype(np.float64), dtype=np.float64)
        params[f"{name}.bias"] = Tensor(rand((C,), 1), dtype=np.float64)
        layer.bias.data = params[f"{name}.bias"].data.astype(np.float32)
    mask = np.zeros((B, 1, 1, T))
    mask[1, 0, 0, -1] = -1e9
    q, k, v = (split_heads(F.linear(x, params[f"{n}.weight"], params[f"{n}.bias"]), H)
               for n in ("query", "key", "value"))
    context = scaled_dot_product_attention(q, k, v, mask).transpose(0, 2, 1, 3).reshape(B, T, C)
    composed = F.linear(context, params["output.weight"], params["output.bias"]).data
    library = attention(Tensor(x.data.astype(np.float32)), mask.astype(np.float32)).data
    np.testing.assert_allclose(backend.to_numpy(composed), backend.to_numpy(library), atol=1e-5)
    np.testing.assert_allclose(backend.to_numpy(multi_head_attention(x, params, H, mask).data),
                               backend.to_numpy(composed), atol=1e-12)


@pytest.mark.parametrize("eps", [1e-12, 1e-5, 0.1])
def test_layer_norm_backward_reference_equals_autograd_on_the_original_input(eps):
    """The reference rebuilds an input from the cache; its gradients must equal those of the
    library's layer norm on the original x."""
    x = rand((3, 7), 0, 2.0) + 3.0
    weight, bias, g = rand((7,), 1), rand((7,), 2), rand((3, 7), 3)
    X, W, B = (Tensor(a, requires_grad=True, dtype=np.float64) for a in (x, weight, bias))
    F.layer_norm(X, W, B, eps).backward(g)
    _, xhat, rstd = layer_norm_forward(x, weight, bias, eps)
    dx, dweight, dbias = reference_layer_norm_backward(g, xhat, rstd, weight)
    host = backend.to_numpy
    np.testing.assert_allclose(host(dx), host(X.grad), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(host(dweight), host(W.grad), rtol=1e-12)
    np.testing.assert_allclose(host(dbias), host(B.grad), rtol=1e-12)


def test_every_task_has_a_well_formed_contract():
    ids = [t.id for a in ASSIGNMENTS for t in a.tasks]
    assert len(ids) == len(set(ids))
    for a in ASSIGNMENTS:
        assert a.library and a.reason and a.lessons
        for i, task in enumerate(a.tasks, 1):
            assert task.id == f"{a.id}.{i}"
            assert task.points > 0 and task.cases(Draw())
            assert inspect.getdoc(task.reference), task.id
            assert task.stub_message.startswith(f"Task {task.id}: ") and '"' not in task.stub_message


# ---- the command -------------------------------------------------------------------------------------------

def test_the_command_prints_a_table_and_exits_by_the_result(tmp_path, capsys):
    assert grade.main([str(STUBS / "a4_adapter_lora.py")]) == 1
    out = capsys.readouterr().out
    assert "A4.1  adapter_forward    0 / 3   not started" in out
    assert "  0 / 10  graded in " in out

    path = solution_with(tmp_path, "a2_softmax_layernorm.py", WRONG_LAYER_NORM)
    assert grade.main([str(path), "--task", "A2.4"]) == 1
    out = capsys.readouterr().out
    assert "A2.4  layer_norm_backward    0 / 3   failed" in out and "A2.1" not in out
    assert "check: x (4, 6) (scale 1.0, offset 0.0), eps=1e-05" in out and "hint: " in out

    assert grade.main(["--reference", "A5"]) == 0
    assert "10 / 10" in capsys.readouterr().out
    assert grade.main(["--check-stubs"]) == 0
    assert grade.main(["--stub", "A5.3"]) == 0
    assert capsys.readouterr().out.endswith(stubs.stub_source(assignment("A5").tasks[2]))
    assert grade.main(["--list"]) == 0
    assert "A5.4  adamix_loss" in capsys.readouterr().out


def test_a_file_that_does_not_parse_is_an_error_for_every_task(tmp_path, capsys):
    path = write(tmp_path, "a1_autograd.py", "def unbroadcast(grad, shape)\n    pass\n")
    assert grade.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert out.count(" error") == 4 and "the file could not be run: the file raised SyntaxError" in out
    path = write(tmp_path, "mine.py", "def unbroadcast(grad, shape)\n    pass\n")   # and no name to go by
    assert grade.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "cannot grade" in err and "SyntaxError at line 1" in err


def test_the_child_refuses_to_run_a_file_when_tinymix_itself_loads_more_than_allowed():
    """If loading the allowed modules loads a module the assignment refuses (here functional, which
    imports kernels), the child stops before the submission runs, instead of leaving it in reach."""
    narrower = dataclasses.replace(assignment("A3"), library=("backend", "tensor", "functional", "nn"))
    results, run = judge.grade_source((SOLUTIONS / "a3_attention.py").read_bytes(), "a3_attention.py", narrower)
    assert "cannot isolate this assignment: loading tinymix also loaded ['tinymix.kernels']" in run.output
    assert run.load_error is not None and all(r.status == "error" for r in results)
