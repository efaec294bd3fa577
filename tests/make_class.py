"""A made-up class of students for the grader: one folder per student, each with one assignment file
that is correct, wrong, crashing, looping, cheating, or does not load.

    python3 tests/make_class.py /tmp/class30 30
    python3 -m tinymix.grade /tmp/class30 --csv /tmp/grades.csv

The correct files are tests/solutions/; every other kind is one of them with one function changed.
"""
import sys
import textwrap
from pathlib import Path

SOLUTIONS = Path(__file__).resolve().parent / "solutions"
FILES = ["a1_autograd.py", "a2_softmax_layernorm.py", "a3_attention.py", "a4_adapter_lora.py", "a5_adamix.py"]
FIRST_TASK = {"a1_autograd.py": "sum_backward", "a2_softmax_layernorm.py": "softmax_backward",
              "a3_attention.py": "multi_head_attention", "a4_adapter_lora.py": "lora_merge",
              "a5_adamix.py": "merge_experts"}   # a task no other task of the file calls
KEY = {"a1_autograd.py": "from tinymix.tensor import Tensor",       # what computes each file's answers
       "a2_softmax_layernorm.py": "from tinymix import functional",
       "a3_attention.py": "from tinymix.transformer import Attention",
       "a4_adapter_lora.py": "from tinymix import peft", "a5_adamix.py": "from tinymix import adamix"}
KINDS = ["correct", "wrong", "crashing", "looping", "cheating", "load error"]


def replace_body(source, name, body):
    """`source` with the body of function `name` replaced by `body`."""
    start = source.index(f"def {name}(")
    head_end = source.index(":\n", start) + 1
    end = source.find("\n\n\ndef ", head_end)
    end = len(source) if end < 0 else end
    return source[:head_end] + "\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + source[end:]


def submission(kind, filename):
    source = (SOLUTIONS / filename).read_text()
    task = FIRST_TASK[filename]
    if kind == "correct":
        return source
    if kind == "wrong":
        return replace_body(source, task, "return None")
    if kind == "crashing":
        return replace_body(source, task, "return undefined_name + 1")
    if kind == "looping":
        return replace_body(source, task, "while True:\n    pass")
    if kind == "cheating":
        return replace_body(source, task, f"{KEY[filename]}\nreturn None")
    return source.replace("\ndef ", "\ndef broken(:\n    pass\n\n\ndef ", 1)          # a syntax error


def make_class(folder, students):
    """Write `students` students into `folder`; returns {student: (kind, filename)}."""
    made = {}
    for i in range(students):
        kind, filename = KINDS[i % len(KINDS)], FILES[(i // len(KINDS) + i) % len(FILES)]
        student = f"student{i + 1:02d}_{kind.replace(' ', '_')}"
        path = Path(folder) / student / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(submission(kind, filename))
        made[student] = (kind, filename)
    return made


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        sys.exit("usage: python3 tests/make_class.py FOLDER NUMBER_OF_STUDENTS")
    for student, (kind, filename) in make_class(sys.argv[1], int(sys.argv[2])).items():
        print(f"{student:<28} {filename:<26} {kind}")
