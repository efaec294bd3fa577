"""The lessons as a list: number, title, objective and run time.

The title is the lesson's first heading ("# Lesson 08 — adapters"); the objective and the time come
from the table in lessons/README.md (one row per lesson, the seconds its cells ran in full mode), so
each fact is written once. tests/test_course.py checks that the table and the lessons agree.
"""
import re

from cells import LESSONS, lesson_files, parse_cells

README = LESSONS / "README.md"
ROW = re.compile(r"^\| (\d\d) \| `(\w+\.py)` \| (.+?) \| (.+?) \| (.+?) \| (.+?) \| (\d+) \|$")
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
         "twenty-one", "twenty-two", "twenty-three", "twenty-four", "twenty-five"]


def title(path):
    """The text of a lesson's first heading, without "Lesson NN —"."""
    for cell in parse_cells(path):
        if cell.kind == "markdown":
            first = cell.prose().split("\n", 1)[0].lstrip("# ").strip()
            return re.sub(r"^Lesson \d+\s*[—-]\s*", "", first)
    return path.stem


def readme_rows():
    """{number: {"file", "objective", "prerequisites", "full", "fast"}} from lessons/README.md's table."""
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            number, file, objective, prerequisites, full, fast, _ = match.groups()
            rows[number] = {"file": file, "objective": objective, "prerequisites": prerequisites,
                            "full": full, "fast": fast}
    return rows


def lessons():
    """[{"number", "path", "title", "objective", "time"}] for every lesson, in order."""
    rows = readme_rows()
    return [{"number": number, "path": path, "title": title(path),
             "objective": rows.get(number, {}).get("objective", ""), "time": rows.get(number, {}).get("full", "?")}
            for number, path in lesson_files().items()]


def count_in_words():
    found = len(lesson_files())
    return WORDS[found] if found < len(WORDS) else str(found)


def listing():
    """The runner's list: one line per lesson, number, title and how long its cells run."""
    found = lessons()
    width = max(len(lesson["title"]) for lesson in found)
    lines = [f"{lesson['number']}  {lesson['title']:<{width}}  {lesson['time']:>7}   {lesson['path'].name}"
             for lesson in found]
    return "\n".join([f"{'':2}  {'lesson':<{width}}  {'runs in':>7}   file"] + lines)
