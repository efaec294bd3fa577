"""What a hostile student file cannot do to the grader: one test per attack. Most run through one real
class-mode command over a folder of hostile files (`python3 -m tinymix.grade FOLDER --json ...` in a
process of its own, as an instructor would run it), so a file that patches, exits or hangs the
grader would show in every file graded after it."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tinymix import grade
from tinymix.grading import stubs
from tinymix.grading.cli import grade_file

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = Path(__file__).parent / "solutions"
STUB_A1 = (stubs.STUB_DIR / "a1_autograd.py").read_text()


def replace_body(source, name, body):
    """`source` with the body of function `name` (docstring kept) replaced by `body`."""
    start = source.index(f"def {name}(")
    head_end = source.index(":\n", start) + 1
    if source[head_end:].lstrip().startswith('"""'):
        head_end = source.index('"""', source.index('"""', head_end) + 3) + 3
    end = source.find("\n\n\n", head_end)
    end = len(source) if end < 0 else end
    return source[:head_end] + "\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + source[end:]


SOLVED_A1 = (SOLUTIONS / "a1_autograd.py").read_text()

HOSTILE = {
    # five lines appended to an untouched stub: replace the grader's functions through __main__
    "a_patcher/a1_autograd.py": STUB_A1 + textwrap.dedent("""
        import sys
        _grader = sys.modules["__main__"]
        for _name in ("grade_task", "judge", "compare", "run_case"):
            setattr(_grader, _name, lambda *args, **kwargs: None)
        sys.modules.get("tinymix.grading.compare") and setattr(sys.modules["tinymix.grading.compare"], "compare", print)
    """),
    "b_honest/a2_softmax_layernorm.py": (stubs.STUB_DIR / "a2_softmax_layernorm.py").read_text(),
    "c_exit_at_import/a1_autograd.py": STUB_A1.replace("from tinymix.backend import xp", "import sys\nsys.exit(0)", 1),
    "d_exit_in_task/a1_autograd.py": replace_body(SOLVED_A1, "mul_backward", "raise SystemExit(0)"),
    "e_os_exit/a1_autograd.py": replace_body(SOLVED_A1, "mul_backward", "import os\nos._exit(0)"),
    "f_loop/a1_autograd.py": replace_body(SOLVED_A1, "sum_backward", "while True:\n    pass"),
    "g_interrupt/a1_autograd.py": replace_body(SOLVED_A1, "sum_backward", "raise KeyboardInterrupt"),
    "h_flood/a1_autograd.py": replace_body(SOLVED_A1, "mul_backward", "while True:\n    print('x' * 1000)"),
    "i_chatty/a1_autograd.py": replace_body(SOLVED_A1, "unbroadcast", """
        print("debugging unbroadcast", grad.shape, shape)
        extra = grad.ndim - len(shape)
        if extra:
            grad = grad.sum(axis=tuple(range(extra)))
        stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
        return grad.sum(axis=stretched, keepdims=True) if stretched else grad
    """),
    "j_key/a1_autograd.py": textwrap.dedent("""
        import os
        import sys

        import tinymix.backend

        ROOT = os.path.dirname(tinymix.backend.__file__)


        def unbroadcast(grad, shape):
            from tinymix import assignments as key
            return key.unbroadcast(grad, shape)


        def mul_backward(g, a, b):
            import importlib
            return importlib.import_module("tinymix.assignments.a1_autograd").mul_backward(g, a, b)


        def sum_backward(g, shape, axis=None, keepdims=False):
            sys.path.insert(0, os.path.join(ROOT, "assignments"))
            import a1_autograd
            return a1_autograd.sum_backward(g, shape, axis, keepdims)


        def matmul_backward(g, a, b):
            namespace = {}
            exec(open(os.path.join(ROOT, "assignments", "a1_autograd.py")).read(), namespace)
            return namespace["matmul_backward"](g, a, b)
    """),
    "k_autograd/a1_autograd.py": replace_body(SOLVED_A1, "mul_backward", """
        from tinymix.tensor import Tensor
        A, B = Tensor(a, requires_grad=True, dtype=a.dtype), Tensor(b, requires_grad=True, dtype=b.dtype)
        (A * B).backward(g)
        return A.grad, B.grad
    """),
    "l_functional/a2_softmax_layernorm.py": textwrap.dedent("""
        def softmax_backward(g, y, axis=-1):
            from tinymix import functional as F
            return F
    """),
    "m_attention/a3_attention.py": textwrap.dedent("""
        from tinymix import functional as F


        def scaled_dot_product_attention(q, k, v, mask_bias):
            return F.attention(q, k.transpose(0, 1, 3, 2), v, mask_bias)


        def multi_head_attention(x, params, num_heads, mask_bias):
            from tinymix.transformer import Attention
            return Attention
    """),
    "n_peft/a4_adapter_lora.py": textwrap.dedent("""
        def adapter_forward(h, params):
            import tinymix.peft
            return tinymix.peft
    """),
    "o_adamix/a5_adamix.py": textwrap.dedent("""
        import importlib

        from tinymix import functional as F


        def symmetric_kl(p_logits, q_logits):
            return F.symmetric_kl(p_logits, q_logits)


        def adamix_loss(logits_1, logits_2, targets, consistency_weight):
            return importlib.reload(F)


        def merge_experts(expert_weights, expert_biases):
            from tinymix import adamix
            return adamix
    """),
    "q_copycat/a1_autograd.py": replace_body(STUB_A1, "matmul_backward", """
        import os
        import tinymix
        theirs = os.path.join(os.path.dirname(os.path.dirname(__file__)), "z_solved", "a1_autograd.py")
        namespace = {}
        exec(open(theirs).read(), namespace)
        return namespace["matmul_backward"](g, a, b)
    """),
    "r_vandal/a1_autograd.py": STUB_A1 + textwrap.dedent("""
        import os
        _class = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        _victim = os.path.join(_class, "z_solved", "a1_autograd.py")
        for _attack in (lambda: open(_victim, "w").write("oops"), lambda: os.remove(_victim),
                        lambda: os.rename(_victim, _victim + ".bak")):
            try:
                _attack()
            except OSError as error:
                print(type(error).__name__, error)
    """),
    "z_solved/a1_autograd.py": SOLVED_A1,                  # graded last: nothing before it may cost it marks
}


@pytest.fixture(scope="module")
def hostile_class(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_class")
    for name, source in HOSTILE.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(source)
    out = folder.parent / "grades.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    process = subprocess.run([sys.executable, "-m", "tinymix.grade", str(folder), "--json", str(out),
                              "--time-limit", "1", "--sandbox", "none"], capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    assert "Traceback" not in process.stdout + process.stderr
    files = {f["file"].split(folder.name + os.sep, 1)[1]: f
             for s in json.loads(out.read_text())["students"] for f in s["files"]}
    return process, files, seconds


def tasks(files, name):
    return {t["task"]: t for t in files[name]["tasks"]}


def messages(task):
    return " | ".join(f["message"] for f in task["failures"])


def test_a_file_cannot_patch_the_grader_for_itself_or_for_the_files_after_it(hostile_class):
    process, files, _ = hostile_class
    assert files["a_patcher/a1_autograd.py"]["score"] == 0
    assert {t["status"] for t in files["a_patcher/a1_autograd.py"]["tasks"]} == {"not started"}
    assert [t["status"] for t in files["b_honest/a2_softmax_layernorm.py"]["tasks"]] == ["not started"] * 4
    assert files["z_solved/a1_autograd.py"]["score"] == 10           # the last file, graded honestly
    assert process.returncode == 1


def test_exiting_at_import_is_an_error_on_every_task_with_a_complete_report(hostile_class):
    process, files, _ = hostile_class
    graded = files["c_exit_at_import/a1_autograd.py"]
    assert [t["status"] for t in graded["tasks"]] == ["error"] * 4 and graded["score"] == 0
    assert "SystemExit" in graded["error"] and "sys.exit(0)" in graded["error"]
    assert process.returncode != 0


def test_exiting_inside_a_task_is_an_error_on_that_task_only(hostile_class):
    _, files, _ = hostile_class
    results = tasks(files, "d_exit_in_task/a1_autograd.py")
    assert {i: t["status"] for i, t in results.items()} == {
        "A1.1": "passed", "A1.2": "error", "A1.3": "passed", "A1.4": "passed"}
    assert "SystemExit: 0" in messages(results["A1.2"]) and "must return its answer" in messages(results["A1.2"])


def test_os_exit_inside_a_task_ends_only_that_task(hostile_class):
    _, files, _ = hostile_class
    results = tasks(files, "e_os_exit/a1_autograd.py")
    assert {i: t["status"] for i, t in results.items()} == {
        "A1.1": "passed", "A1.2": "error", "A1.3": "passed", "A1.4": "passed"}
    assert "the process ended with exit status 0" in messages(results["A1.2"])


def test_an_endless_loop_times_out_its_task_and_the_others_are_graded(hostile_class):
    _, files, seconds = hostile_class
    results = tasks(files, "f_loop/a1_autograd.py")
    assert {i: t["status"] for i, t in results.items()} == {
        "A1.1": "passed", "A1.2": "passed", "A1.3": "timed out", "A1.4": "passed"}
    assert "did not finish within 1 s" in messages(results["A1.3"])
    assert 1 <= results["A1.3"]["seconds"] < 5
    assert files["f_loop/a1_autograd.py"]["score"] == 8


def test_a_keyboard_interrupt_raised_in_a_task_is_an_error_with_a_report(hostile_class):
    _, files, _ = hostile_class
    results = tasks(files, "g_interrupt/a1_autograd.py")
    assert {i: t["status"] for i, t in results.items()} == {
        "A1.1": "passed", "A1.2": "passed", "A1.3": "error", "A1.4": "passed"}
    assert "KeyboardInterrupt" in messages(results["A1.3"])


def test_flooding_the_output_stops_that_task_and_printing_is_kept_apart(hostile_class):
    process, files, _ = hostile_class
    flood = tasks(files, "h_flood/a1_autograd.py")
    assert flood["A1.2"]["status"] == "error" and "printed more than 1000 kB" in messages(flood["A1.2"])
    assert [flood[i]["status"] for i in ("A1.1", "A1.3", "A1.4")] == ["passed"] * 3
    chatty = files["i_chatty/a1_autograd.py"]
    assert chatty["score"] == 10 and chatty["printed"].startswith("debugging unbroadcast (2, 3, 4) (3, 4)\n")
    assert "debugging unbroadcast" not in process.stdout      # not mixed into the report
    assert len(files["h_flood/a1_autograd.py"]["printed"]) <= 8000


def test_a_flood_counted_before_the_finished_tasks_were_read_does_not_undo_them():
    """Prints and events come on two pipes, read by two threads: the flood can reach the grader
    before the events the child wrote earlier. Those events still count."""
    import json as json_
    import queue
    from tinymix.grading import runner
    run = runner.Run({"A1.1": runner.TaskRun(), "A1.2": runner.TaskRun()})
    watch = runner._Watch(run, [{"id": "A1.1", "cases": []}, {"id": "A1.2", "cases": []}], time_limit=5,
                          load_limit=10, end=float("inf"), isolation=runner.Isolation())
    events = queue.Queue()
    events.put(("flood", "printed more than 1000 kB"))           # counted first ...
    for event in ({"event": "loaded", "functions": {}}, {"event": "task", "id": "A1.1"},
                  {"event": "done", "id": "A1.1"}, {"event": "task", "id": "A1.2"}):
        events.put(("line", json_.dumps(event)))                  # ... though written before it
    events.put(("eof", None))
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        watch.follow(process, events)
    finally:
        runner._kill(process)
    assert run.tasks["A1.1"].finished and run.tasks["A1.1"].stopped is None
    assert "printed more than 1000 kB" in run.tasks["A1.2"].stopped


@pytest.mark.parametrize("task, refused", [
    ("A1.1", "ImportError: tinymix.assignments is not available while this file is graded"),
    ("A1.2", "ImportError: tinymix.assignments is not available while this file is graded"),
    ("A1.3", "No module named 'a1_autograd'"),     # the copy of tinymix the process sees has no answer key,
    ("A1.4", "/tinymix/assignments/a1_autograd.py may not be opened"),      # and the guard refuses its path
])
def test_the_answer_key_cannot_be_imported_or_read_whatever_the_spelling(hostile_class, task, refused):
    _, files, _ = hostile_class
    result = tasks(files, "j_key/a1_autograd.py")[task]
    assert result["status"] == "error" and result["score"] == 0
    assert refused in messages(result)


@pytest.mark.parametrize("name, task, refused", [
    ("k_autograd/a1_autograd.py", "A1.2", "tinymix.tensor is not available while this file is graded: A1 is graded "
                                          "with tinymix.backend (xp) alone"),
    ("l_functional/a2_softmax_layernorm.py", "A2.1", "tinymix.functional is not available"),
    ("m_attention/a3_attention.py", "A3.2", "tinymix.functional.attention is not available"),
    ("m_attention/a3_attention.py", "A3.3", "tinymix.transformer is not available"),
    ("n_peft/a4_adapter_lora.py", "A4.1", "tinymix.peft is not available"),
    ("o_adamix/a5_adamix.py", "A5.3", "tinymix.functional.symmetric_kl is not available"),
    ("o_adamix/a5_adamix.py", "A5.4", "tinymix.functional is not available"),        # reload(F) to get it back
    ("o_adamix/a5_adamix.py", "A5.5", "tinymix.adamix is not available"),
])
def test_the_library_that_computes_an_assignments_answers_is_refused(hostile_class, name, task, refused):
    _, files, _ = hostile_class
    result = tasks(files, name)[task]
    assert result["status"] == "error" and refused in messages(result)


def test_a_file_cannot_read_or_change_another_students_file(hostile_class):
    _, files, _ = hostile_class
    copied = tasks(files, "q_copycat/a1_autograd.py")["A1.4"]
    assert copied["status"] == "error" and "z_solved" in messages(copied) and "may not be opened" in messages(copied)
    vandal = files["r_vandal/a1_autograd.py"]
    assert vandal["printed"].count("PermissionError") == 3
    victim = files["z_solved/a1_autograd.py"]
    assert victim["score"] == 10 and Path(victim["file"]).read_text() == SOLVED_A1


def test_the_whole_hostile_class_is_graded_in_bounded_time(hostile_class):
    _, files, seconds = hostile_class
    assert len(files) == len(HOSTILE)
    assert seconds < 120


# ---- attacks on one file, in this process ------------------------------------------------------------------

MUTATING_MERGE = """
    def lora_merge(weight, lora_A, lora_B, scaling):
        weight += scaling * (lora_B @ lora_A)
        return weight
"""


def test_a_merge_that_mutates_its_input_weight_fails_and_says_so(tmp_path):
    path = tmp_path / "a4_adapter_lora.py"
    path.write_text(textwrap.dedent(MUTATING_MERGE))
    result = grade_file(path, only={"A4.3"}).results[0]
    assert result.status == "failed" and result.passed == 0
    assert result.failures[0][1] == ("changed its input weight in place: return a new array and leave the inputs "
                                     "unchanged")
    path.write_text(textwrap.dedent(MUTATING_MERGE.replace("weight += ", "weight = weight + ")))
    assert grade_file(path, only={"A4.3"}).results[0].status == "passed"


def test_an_unknown_task_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        grade.main([str(stubs.STUB_DIR / "a1_autograd.py"), "--task", "A1.9"])
    assert exit_.value.code == 2
    assert "no task 'A1.9': the tasks are A1.1, A1.2" in capsys.readouterr().err


SUM_BACKWARD = """
    from tinymix.backend import xp


    def sum_backward(g, shape, axis=None, keepdims=False):
        axis = tuple(range(len(shape))) if axis is None else (axis,) if isinstance(axis, int) else axis
        if not keepdims:
            g = xp.expand_dims(g, tuple(a % len(shape) for a in axis))
        return xp.broadcast_to(g, shape){ending}
"""


def test_an_integer_result_is_told_by_its_dtype(tmp_path):
    path = tmp_path / "a1_autograd.py"
    path.write_text(textwrap.dedent(SUM_BACKWARD.format(ending=".astype(xp.int64)")))
    result = grade_file(path, only={"A1.3"}).results[0]
    assert result.status == "failed" and result.passed == 0
    assert result.failures[0][1].startswith("output: dtype int64, expected float64")
    path.write_text(textwrap.dedent(SUM_BACKWARD.format(ending=".copy()")))
    assert grade_file(path, only={"A1.3"}).results[0].status == "passed"


def test_a_python_list_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "a1_autograd.py"
    path.write_text(textwrap.dedent(SUM_BACKWARD.format(ending=".tolist()")))
    result = grade_file(path, only={"A1.3"}).results[0]
    assert result.status == "failed" and result.passed == 0          # every check, the gradcheck too
    assert all("got a Python list" in m and "Return an xp array" in m for _, m in result.failures)


def test_a_ctrl_c_as_the_child_starts_still_stops_the_child(tmp_path, monkeypatch):
    """The interrupt lands while the child is being started (inside Popen, before the grader holds
    it): the child runs in a session of its own, so only the grader can stop it."""
    from tinymix.grading import runner
    path = tmp_path / "a1_autograd.py"
    path.write_text(replace_body(SOLVED_A1, "sum_backward", "while True:\n    pass"))
    started, real_popen = [], subprocess.Popen

    def popen(*args, **kwargs):
        process = real_popen(*args, **kwargs)
        started.append(process)
        os.kill(os.getpid(), signal.SIGINT)          # Ctrl-C before Popen has returned
        return process

    monkeypatch.setattr(runner.subprocess, "Popen", popen)
    with pytest.raises(KeyboardInterrupt):
        grade_file(path)
    monkeypatch.undo()
    assert len(started) == 1
    try:
        assert started[0].wait(timeout=10) == -signal.SIGKILL    # killed by the grader, not left running
    finally:
        if started[0].poll() is None:
            started[0].kill()


def test_ctrl_c_stops_the_grader_cleanly(tmp_path):
    started = tmp_path / "started"
    path = tmp_path / "a1_autograd.py"
    loop = f"open({str(started)!r}, 'w').close()\nwhile True:\n    pass"
    path.write_text(replace_body(SOLVED_A1, "sum_backward", loop))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "tinymix.grade", str(path), "--csv", str(tmp_path / "g.csv"),
                                "--sandbox", "none"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:     # inside the endless task (limit 5 s)
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert started.exists() and process.returncode == 130
    assert "grading interrupted (Ctrl-C)" in err and "Traceback" not in out + err
    assert not (tmp_path / "g.csv").exists()
