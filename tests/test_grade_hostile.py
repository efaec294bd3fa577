"""What a hostile class cannot do to the grader, with and without the sandbox: garbage on the events
channel (five kinds), a directory-descriptor walk to tinymix's files, a process that outlives the
grader through a path the audit hook does not see, and reading the grader's own process through
/proc. One real class-mode command per sandbox (`python3 -m tinymix.grade CLASS --sandbox MODE`),
run from a copy of the package, so that an attack on "the instructor's checkout" hits the copy."""
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tinymix.grading import sandbox, stubs

ROOT = Path(__file__).resolve().parent.parent
SOLVED_A1 = (Path(__file__).parent / "solutions" / "a1_autograd.py").read_text()
STUB_A1 = (stubs.STUB_DIR / "a1_autograd.py").read_text()
SEED = 987654321
SECRET = "instructor-token-" + uuid.uuid4().hex
MARKER = "VICTIM_MARKER_" + uuid.uuid4().hex      # in the last student's file only
ESCAPEE = "tinymix-escapee-" + uuid.uuid4().hex

WRITE_TO_CHANNELS = """
import os, stat
for _fd in range(3, 64):
    try:
        if stat.S_ISFIFO(os.fstat(_fd).st_mode):
            os.write(_fd, _MESSAGE)
    except OSError:
        pass
"""
LOADED = b'{"event": "loaded", "functions": {"unbroadcast": [["grad", "POSITIONAL_OR_KEYWORD", null], ' \
         b'["shape", "POSITIONAL_OR_KEYWORD", null]]}}\n'
GARBAGE = {   # what each channel attacker writes: all of it reaches the grader before the file's own events
    "wrong_type": b'{"event": "load_failed", "error": "boom"}\n',
    "deep_nesting": b"[" * 200_000 + b"\n",
    "bad_safetensors": LOADED + b'{"event": "task", "id": "A1.1"}\n{"event": "result", "task": "A1.1", "case": 0, '
                       b'"value": {"value": {"array": "0"}, "arrays": "Z2FyYmFnZSBnYXJiYWdl"}, "digests": []}\n',
    "list_for_string": b'{"event": "loaded", "functions": {"unbroadcast": [[["grad"], "POSITIONAL_OR_KEYWORD", '
                       b'null]]}}\n',
    "functions_list": b'{"event": "loaded", "functions": ["unbroadcast"]}\n',
    "oversized": b'{"event": "loaded", "functions": {}, "padding": "' + b"x" * 40 + b'"}\n',   # made 40 MB below
}

FD_WALK = """
import os
def _walk_to(target, flags):
    fd = os.open(".", os.O_RDONLY)
    for _ in range(len(os.getcwd().split("/")) + 2):
        fd = os.open("..", os.O_RDONLY, dir_fd=fd)        # up to /, one dir_fd at a time
    return os.open(target.lstrip("/"), flags, dir_fd=fd)   # then down, relative to it
try:
    with os.fdopen(_walk_to({key!r}, os.O_RDONLY)) as _f:
        print("READ THE KEY", "def matmul_backward" in _f.read())
except Exception as error:
    print("walk to the key refused:", type(error).__name__)
try:
    with os.fdopen(_walk_to({child!r}, os.O_WRONLY | os.O_APPEND), "w") as _f:
        _f.write("\\nraise SystemExit('vandalised')\\n")
    print("WROTE THE GRADER")
except Exception as error:
    print("walk to the grader refused:", type(error).__name__)
"""

OUTLIVE = """
import subprocess, sys, types
class _Quiet:                              # subprocess's own audit call goes to a stand-in
    def __getattr__(self, name):
        return getattr(sys, name)
    @staticmethod
    def audit(*args):
        pass
subprocess.sys = _Quiet()
try:
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", {token!r}], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print("started an escapee")
except Exception as error:
    print("could not start:", type(error).__name__, error)
"""

PROC = """
import os
_seed = str({seed_minus_one} + 1).encode()
_secret = ({secret_head!r} + {secret_tail!r}).encode()
_marker = ({marker_head!r} + {marker_tail!r}).encode()
_parent = os.getppid()

def _scan(pid, needles):
    found = set()
    with open(f"/proc/{{pid}}/maps") as maps, open(f"/proc/{{pid}}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            low, high = (int(x, 16) for x in span.split("-"))
            if not perms.startswith("rw") or high - low > 1 << 28:
                continue
            try:
                mem.seek(low)
                chunk = mem.read(high - low)
            except (OSError, ValueError, OverflowError):
                continue
            found |= {{n for n in needles if n in chunk}}
    return found

for _what in ("cmdline", "environ"):
    try:
        with open(f"/proc/{{_parent}}/{{_what}}", "rb") as _f:
            _text = _f.read()
        print("tried", _what, "LEAK" if _seed in _text or _secret in _text else "nothing")
    except Exception as error:
        print("tried", _what, "refused:", type(error).__name__)
for _what in ("cmdline", "environ"):
    with open(f"/proc/self/{{_what}}", "rb") as _f:
        _text = _f.read()
    print("tried own", _what, "LEAK" if _seed in _text or _secret in _text else "nothing")
try:
    _found = _scan(_parent, (_seed, _secret, _marker))
    print("tried mem", "LEAK " + repr(_found) if _marker in _found or _secret in _found else "nothing")
except Exception as error:
    print("tried mem refused:", type(error).__name__)
"""


def _half(text):
    return text[:len(text) // 2], text[len(text) // 2:]


def hostile_files(checkout):
    files = {f"a_channel_{kind}/a1_autograd.py": f"_MESSAGE = {message!r}\n" + WRITE_TO_CHANNELS + STUB_A1
             for kind, message in GARBAGE.items()}
    files["a_channel_oversized/a1_autograd.py"] = files["a_channel_oversized/a1_autograd.py"].replace(
        "_MESSAGE = ", "_MESSAGE = b'x' * 40_000_000 + ", 1)
    key = str(checkout / "tinymix" / "assignments" / "a1_autograd.py")
    child = str(checkout / "tinymix" / "grading" / "child.py")
    files["b_fd_walk/a1_autograd.py"] = FD_WALK.format(key=key, child=child) + STUB_A1
    files["c_outlive/a1_autograd.py"] = OUTLIVE.format(token=ESCAPEE) + STUB_A1
    secret_head, secret_tail = _half(SECRET)
    marker_head, marker_tail = _half(MARKER)
    files["d_proc/a1_autograd.py"] = PROC.format(seed_minus_one=SEED - 1, secret_head=secret_head,
                                                 secret_tail=secret_tail, marker_head=marker_head,
                                                 marker_tail=marker_tail) + STUB_A1
    files["z_victim/a1_autograd.py"] = f"# {MARKER}\n" + SOLVED_A1
    return files


def escapees():
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and ESCAPEE.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


MODES = ["none", pytest.param("bwrap", marks=pytest.mark.skipif(
    not sandbox.bwrap_works(), reason="bubblewrap (bwrap) is not installed or cannot start here"))]


@pytest.fixture(scope="module", params=MODES)
def hostile_run(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"hostile_{request.param}")
    checkout = base / "checkout"
    shutil.copytree(ROOT / "tinymix", checkout / "tinymix", ignore=shutil.ignore_patterns("__pycache__"))
    child_before = (checkout / "tinymix" / "grading" / "child.py").read_text()
    folder = base / "class"
    for name, source in hostile_files(checkout).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(source)
    out = base / "grades.json"
    (base / "tmp").mkdir()          # scratch folders beside the checkout, not above it
    env = dict(os.environ, PYTHONPATH=str(checkout), INSTRUCTOR_TOKEN=SECRET, TMPDIR=str(base / "tmp"))
    try:
        process = subprocess.run([sys.executable, "-m", "tinymix.grade", str(folder), "--json", str(out), "--csv",
                                  str(base / "grades.csv"), "--seed", str(SEED), "--time-limit", "2",
                                  "--sandbox", request.param], capture_output=True, text=True, timeout=240,
                                 cwd=checkout, env=env)
        survivors = escapees()
    finally:
        for pid in escapees():
            os.kill(pid, signal.SIGKILL)
    data = json.loads(out.read_text()) if out.exists() else None
    files = {f["file"].split(f"class{os.sep}", 1)[1]: f for s in data["students"] for f in s["files"]} if data else {}
    return dict(process=process, files=files, survivors=survivors, base=base,
                child_changed=(checkout / "tinymix" / "grading" / "child.py").read_text() != child_before)


def test_the_hostile_class_is_graded_and_its_grades_written(hostile_run):
    process = hostile_run["process"]
    assert "Traceback" not in process.stdout + process.stderr, process.stderr[-3000:]
    assert (hostile_run["base"] / "grades.csv").exists() and len(hostile_run["files"]) == len(GARBAGE) + 4
    assert hostile_run["files"]["z_victim/a1_autograd.py"]["score"] == 10      # graded last, untouched
    assert process.returncode == 1


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_on_the_events_channel_is_interference_not_a_crash(hostile_run, kind):
    graded = hostile_run["files"][f"a_channel_{kind}/a1_autograd.py"]
    assert graded["score"] == 0
    for task in graded["tasks"]:
        assert task["status"] == "error"
        assert "the submission interfered with the grader" in task["failures"][0]["message"], (kind, task)
    if kind == "oversized":                       # never read whole: the reader stops at the cap
        assert "a message larger than 32 MB" in graded["tasks"][0]["failures"][0]["message"]


def test_a_directory_descriptor_walk_reaches_no_file_of_tinymix(hostile_run):
    printed = hostile_run["files"]["b_fd_walk/a1_autograd.py"]["printed"]
    assert "walk to the key refused" in printed and "walk to the grader refused" in printed, printed
    assert "READ THE KEY" not in printed and "WROTE THE GRADER" not in printed
    assert not hostile_run["child_changed"]


def test_no_process_of_a_submission_outlives_its_grading(hostile_run):
    printed = hostile_run["files"]["c_outlive/a1_autograd.py"]["printed"]
    assert "started an escapee" in printed or "could not start" in printed, printed
    assert hostile_run["survivors"] == []


def test_the_graders_process_and_the_secret_seed_are_out_of_reach(hostile_run):
    printed = hostile_run["files"]["d_proc/a1_autograd.py"]["printed"]
    assert printed.count("tried") == 5, printed
    assert "LEAK" not in printed, printed


# ---- the sandbox itself ------------------------------------------------------------------------------------

LOOK_AROUND = """
import os, socket
print("cwd", os.getcwd(), os.listdir("."), "pid", os.getpid(), "home", os.environ.get("HOME"))
print("checkout", os.path.exists({checkout!r}), "class", os.path.exists({folder!r}))
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    print("network: connected")
except OSError as error:
    print("network:", type(error).__name__)
"""


@pytest.mark.skipif(not sandbox.bwrap_works(), reason="bubblewrap (bwrap) is not installed or cannot start here")
def test_under_bubblewrap_a_file_sees_an_empty_world(tmp_path):
    from tinymix.grading import runner
    from tinymix.grading.cli import grade_file
    path = tmp_path / "class" / "a1_autograd.py"
    path.parent.mkdir()
    path.write_text(LOOK_AROUND.format(checkout=str(ROOT / "tinymix"), folder=str(path.parent)) + STUB_A1)
    with sandbox.Place() as place:
        graded = grade_file(path, isolation=runner.Isolation(place, True, (str(path.parent),)))
    assert "cwd /scratch [] pid 2 home /home/student" in graded.output, graded.output
    assert "checkout False class False" in graded.output
    assert "network: connected" not in graded.output and "network: OSError" in graded.output


def test_without_bubblewrap_the_grader_says_so_once_and_bwrap_is_refused(tmp_path, monkeypatch, capsys):
    from tinymix import grade
    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    folder = tmp_path / "class"
    for student in ("ann", "ben"):
        (folder / student).mkdir(parents=True)
        (folder / student / "a1_autograd.py").write_text(SOLVED_A1)
    assert grade.main([str(folder), "--seed", "5"]) == 0
    err = capsys.readouterr().err
    assert err.count("WARNING: no sandbox on this machine") == 1 and "apt-get install bubblewrap" in err
    assert "pass it as TINYMIX_GRADE_SEED" in err
    with pytest.raises(SystemExit) as exit_:
        grade.main([str(folder), "--sandbox", "bwrap"])
    assert exit_.value.code == 2 and "bubblewrap is not installed or cannot start" in capsys.readouterr().err


def test_without_bubblewrap_no_folder_can_be_opened_as_a_descriptor(tmp_path):
    """The guard's second layer under the walk above: with no folder descriptor, no dir_fd path exists
    that the audit hook cannot resolve (here a folder far from every protected path)."""
    from tinymix.grading.cli import grade_file
    path = tmp_path / "a1_autograd.py"
    path.write_text("import os\ntry:\n    os.open('/usr/share', os.O_RDONLY)\n    print('OPENED')\n"
                    "except PermissionError as error:\n    print(error)\n" + STUB_A1)
    graded = grade_file(path)
    assert "opening a folder as a file descriptor is not allowed" in graded.output, graded.output


def test_on_the_gpu_the_grader_says_it_runs_without_the_sandbox(monkeypatch):
    monkeypatch.setenv("TINYMIX_BACKEND", "cupy")           # what a new process would run on
    sandboxed, warning = sandbox.choose("auto")
    assert not sandboxed and "runs without the sandbox" in warning
    with pytest.raises(ValueError, match="grades on the CPU only"):
        sandbox.choose("bwrap")
