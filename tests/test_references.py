"""Every reference in the repository points into the repository: a clone has no sibling folders and
no developer's machine, so a path outside it, or a cited page or section that does not exist, leaves
the reader with nothing to follow.

Checked in every tracked text file:
  - no path that leaves the repository: a parent folder's notes folder, or an absolute path of the machine;
  - a cited Markdown page exists, relative to the citing file's folder, the repository root or docs/:
    a cited page is a path with a folder (`docs/adamix.md`), a Markdown link `](results.md)`, or a
    name followed by a section (a bare `summary.md` may be a file the code writes, and is not checked);
  - a cited section ("adamix.md §10", "adamix.md section 7b", "sections 3 and 5") is a heading
    `## 10.` of that page;
  - a bare "§N" in the code cites docs/adamix.md (the library's convention), so that section exists.
"""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "shared" + "/docs", r"(?<![\w.])/" + "work/"]))
CITED_PAGE = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.md)\b")
SECTION_AFTER = re.compile(r"\s*(?:,\s*)?(?:§\s*|sections?\s+)((?:\d+[a-z]?)(?:(?:,\s*|\s+and\s+|\s*/\s*|,\s*§)\d+[a-z]?)*)")
BARE_SECTION = re.compile(r"§\s*(\d+[a-z]?)")
TEXT = {".py", ".md", ".txt", ".toml", ".ini", ".cfg", ".sh", ".yml", ".yaml"}


def tracked_text_files():
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    found = [ROOT / n for n in names.splitlines() if Path(n).suffix in TEXT]
    return [p for p in found if p.exists() and p.name != Path(__file__).name]


def sections_of(page):
    """The numbers of a page's `## N.` headings ("7b" too)."""
    if not page.is_file():
        return set()
    return set(re.findall(r"^##\s+(\d+[a-z]?)\.", page.read_text(encoding="utf-8"), re.MULTILINE))


def resolve(cited, citing):
    for base in (citing.parent, ROOT, ROOT / "docs"):
        if (base / cited).is_file():
            return (base / cited).resolve()
    return None


def problems_in(path, text):
    """[(line number, what is wrong)] for one file's text."""
    found = []
    adamix_page = ROOT / "docs" / "adamix.md"
    for number, line in enumerate(text.splitlines(), 1):
        if OUTSIDE.search(line):
            found.append((number, f"a path outside the repository: {line.strip()}"))
        cited_here = False
        for match in CITED_PAGE.finditer(line):
            cited = match.group(1)
            if "://" in line[max(0, match.start() - 60):match.start()]:
                continue                                     # a web address, not a file of ours
            after = SECTION_AFTER.match(line, match.end())
            linked = line[:match.start()].endswith("](")
            if not (after or linked or "/" in cited):
                continue                         # a bare file name, such as an output the code writes
            page = resolve(cited, path)
            if page is None:
                found.append((number, f"cites {cited}, which is not in the repository"))
                continue
            cited_here = cited_here or page == adamix_page.resolve()
            if after:
                for section in re.findall(r"\d+[a-z]?", after.group(1)):
                    if section not in sections_of(page):
                        found.append((number, f"cites {cited} section {section}, which it does not have"))
        if path.suffix == ".py" and not cited_here:
            for section in BARE_SECTION.findall(line):
                if section not in sections_of(adamix_page):
                    found.append((number, f"§{section} is not a section of docs/adamix.md"))
    return found


def test_the_checker_catches_each_kind_of_broken_reference(tmp_path):
    citing = ROOT / "tinymix" / "example.py"
    assert problems_in(citing, "see " + "/".join(["..", "shared", "docs", "adamix.md"]))   # outside the repository
    assert problems_in(citing, "see " + "/" + "work/main/data")
    assert problems_in(citing, "see docs/assets.md")                           # no such page
    assert problems_in(citing, "see assets.md section 4")
    assert problems_in(ROOT / "docs" / "x.md", "[the notes](notes.md)")
    assert problems_in(citing, "see docs/adamix.md §12")                       # no such section
    assert problems_in(citing, "see docs/adamix.md sections 3 and 13")         # the second is missing
    assert problems_in(citing, "one draw per call (§13)")                      # bare §: docs/adamix.md
    assert not problems_in(citing, "see docs/adamix.md sections 3 and 5, §7b and docs/results.md")
    assert not problems_in(ROOT / "docs" / "x.md", "[the e2e page](results_e2e.md), adamix.md §10")
    assert not problems_in(citing, "it writes summary.md")                     # an output, not a citation


def test_every_reference_points_into_the_repository():
    found = [f"{path.relative_to(ROOT)}:{n}: {what}" for path in tracked_text_files()
             for n, what in problems_in(path, path.read_text(encoding="utf-8", errors="replace"))]
    assert not found, f"{len(found)} broken references:\n" + "\n".join(found)
