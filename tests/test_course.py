"""What an instructor relies on: the lessons' README counts and lists every lesson, the runner's list
says what each lesson is, the course schedule covers every lesson, exercise and assignment, no
exercise file shows a multiple-choice answer, and the lessons become static HTML pages."""
import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
sys.path.insert(0, str(LESSONS))
import catalogue  # noqa: E402
import make_html  # noqa: E402
import run as runner  # noqa: E402
from exercises import exercises_of  # noqa: E402

NUMBERS = list(runner.lesson_files())


def test_the_lessons_readme_counts_and_lists_every_lesson():
    readme = (LESSONS / "README.md").read_text(encoding="utf-8")
    count = catalogue.count_in_words()
    assert readme.split("\n")[2].startswith(f"{count.capitalize()} step-through lessons"), \
        f"lessons/README.md should open with '{count.capitalize()} step-through lessons'"
    rows = catalogue.readme_rows()
    assert list(rows) == NUMBERS, "the README's table needs one row per lesson, in order"
    assert all(rows[n]["file"] == runner.lesson_files()[n].name for n in NUMBERS)


def test_the_runners_list_gives_number_title_and_time():
    listed = subprocess.run([sys.executable, str(LESSONS / "run.py")], capture_output=True, text=True, check=True,
                            cwd=ROOT).stdout
    for lesson in catalogue.lessons():
        line = next((l for l in listed.splitlines() if l.startswith(lesson["number"] + " ")), "")
        assert lesson["title"] in line and lesson["time"] in line and lesson["path"].name in line, line
    assert catalogue.title(runner.lesson_files()["08"]) == "adapters"


def test_the_schedule_covers_every_lesson_exercise_and_assignment():
    course = (ROOT / "docs" / "course.md").read_text(encoding="utf-8")
    rows = [line for line in course.splitlines() if re.match(r"^\| \d \|", line)]
    lessons = {n for row in rows for n in re.findall(r"\b\d\d\b", row.split("|")[3])}
    assert lessons == set(NUMBERS)
    exercises = " ".join(row.split("|")[4] for row in rows)
    for number in NUMBERS:
        ids = list(exercises_of(number))
        assert f"{ids[0]}-{ids[-1]}" in exercises, f"the schedule's exercises miss lesson {number}'s {ids}"
    assignments = " ".join(row.split("|")[5] for row in rows)
    for path in sorted((LESSONS / "assignments").glob("a?_*.py")):
        assert path.name[:2].upper() in assignments, path.name
    assert (ROOT / "tests" / "lesson_exercise_answers.py").is_file() and "lesson_exercise_answers.py" in course


def test_no_exercise_file_shows_a_multiple_choice_answer():
    for path in sorted((LESSONS / "exercises").glob("lesson*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"choice\(answer,\s*[\"']", text), f"{path.name}: seal the letters (exercises.seal)"


def test_prose_becomes_html():
    text = ("# Title\n\nA *short* paragraph with `a < b` and\n**bold** words.\n\n    loss = CE + w * KL\n\n"
            "- one\n- two,\n  continued\n\n1. first\n2. second")
    page = make_html.prose_to_html(text)
    assert "<h1>Title</h1>" in page
    assert "<p>A <em>short</em> paragraph with <code>a &lt; b</code> and <strong>bold</strong> words.</p>" in page
    assert "<pre>loss = CE + w * KL</pre>" in page
    assert "<ul><li>one</li><li>two, continued</li></ul>" in page and "<ol><li>first</li><li>second</li></ol>" in page


def test_every_lesson_becomes_a_static_page(tmp_path):
    written = make_html.write_html(tmp_path)
    assert sorted(p.name for p in written) == sorted([f"{p.stem}.html" for p in runner.lesson_files().values()]
                                                      + ["index.html"])
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    for number, path in runner.lesson_files().items():
        page = (tmp_path / f"{path.stem}.html").read_text(encoding="utf-8")
        assert f'href="{path.stem}.html"' in index and "# %%" not in page
        cells = runner.parse_cells(path)
        code = [c for c in cells if c.kind == "code" and c.source]
        assert page.count("<pre class=") == len(code), path.name
        for cell in code:
            assert html.escape(cell.source, quote=False) in page, f"{path.name}: a code cell is missing"
        assert page.count("<h1>") == 1 and "<h1>Lesson" in page


def test_an_unknown_lesson_is_one_clear_line(tmp_path):
    done = subprocess.run([sys.executable, str(LESSONS / "make_html.py"), str(tmp_path), "99"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: no lesson 99") and "Traceback" not in done.stderr


@pytest.mark.parametrize("page", ["results.md", "results_e2e.md", "course.md", "adamix.md"])
def test_docs_commands_say_python3(page):
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    assert not re.search(r"(?<![\w/.-])python (-m|lessons/|tinymix/)", text)
