"""The results pages open with the answer: a verdict paragraph, then the command's report, whose
verdict list, terms and claims table come before any other table; every term is defined before it is
used; what is not run yet comes last. The report's own order is checked in tests/test_experiments.py."""
import re
from pathlib import Path

import pytest

from tinymix.experiments import report

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["results.md", "results_e2e.md", "results_neighbours.md", "results_neighbours_e2e.md", "results_fewshot.md",
         "results_surgery.md", "results_porting.md"]
TERMS = {"arm": r"\barms?\b", "spread": r"\bspread\b", "moved": r"\bmoved\b", "rows B": r"\brows? \"?B\b",
         "rows G": r"\brows? \"?G\b", "rows R": r"\brows? \"?R\b", "paired difference": r"\bpaired difference"}


def first_use_before_definition(text):
    """[term] for every defined term that the text uses before its definition line."""
    early = []
    for term, pattern in TERMS.items():
        definition = text.find(f"- **{term}**:")
        if definition < 0:
            continue
        first = re.search(pattern, text, re.IGNORECASE)
        if first and first.start() < definition:
            early.append(term)
    return early


@pytest.mark.parametrize("name", PAGES)
def test_a_results_page_opens_with_the_answer_and_ends_with_what_is_missing(name):
    text = (DOCS / name).read_text(encoding="utf-8")
    headings = re.findall(r"(?m)^## (.+)$", text)
    assert headings[0] == "The answer" and headings[-1] == "Not run yet", headings
    answer = text.split("## The answer", 1)[1].split("\n## ", 1)[0]
    missing = text.split("## Not run yet")[-1]
    if "Not run yet (" in missing or "No learning rate chosen yet" in missing:     # runs still being made
        assert answer.strip().startswith(("**No", "**Yes", "**Not yet")), "the answer's first word"
    else:
        assert answer.strip().startswith(("**No", "**Yes")), "the answer's first word"
    tables = [m.start() for m in re.finditer(r"(?m)^\| ", text)]
    assert text.index("| # | claim |") == tables[0], "the claims table is the first table"
    assert text.index("**Verdict, claim by claim**") < text.index("Terms used below") < tables[0]
    assert not first_use_before_definition(text)
    assert "Not run yet (" not in text.split("## Not run yet")[0], "the list of missing runs is at the end"


def test_the_check_catches_a_term_used_before_its_definition():
    assert first_use_before_definition("the spread was large\n- **spread**: how far") == ["spread"]
    assert first_use_before_definition("- **spread**: how far\nthe spread was large") == []


def test_the_verdict_paragraph_counts_the_decided_comparisons():
    judged = [report.Claim("1", "A >= B", "a", "b", {0: 0.8, 1: 0.82}, {0: 0.7, 1: 0.71}).judge(),
              report.Claim("1", "A >= B", "c", "b", {0: 0.6, 1: 0.62}, {0: 0.7, 1: 0.71}).judge(),
              report.Claim("1", "A >= B", "d", "b", {}, {}).judge()]
    text = report.verdict_paragraph(judged)
    assert "claim 1, " in text and "1 held, 1 refuted (of 2 comparisons); 1 more wait for runs." in text
    assert "| d vs b |" not in report.claims_table(judged)                  # waits at the end instead
    assert "1 (d vs b)" in report.waiting_claims(judged)


@pytest.mark.parametrize("name, folder, source", [("results.md", "nlu-small", "results.md"),
                                                  ("results_e2e.md", "e2e", "results.md"),
                                                  ("results_neighbours.md", "nlu-small", "neighbours.md"),
                                                  ("results_neighbours_e2e.md", "e2e", "neighbours.md"),
                                                  ("results_fewshot.md", "nlu-fewshot", "results.md"),
                                                  ("results_surgery.md", "surgery", "surgery.md"),
                                                  ("results_porting.md", "e2e-porting", "porting.md")])
def test_each_page_carries_its_commands_report_unchanged(name, folder, source, tmp_path):
    """The page is what `compare --report-only` writes into it: pasting its folder's report again
    changes nothing."""
    page = tmp_path / name
    page.write_text((DOCS / name).read_text(encoding="utf-8"), encoding="utf-8")
    report_text = (DOCS / "experiments" / folder / source).read_text(encoding="utf-8")
    assert not report.update_page(page, report_text), f"docs/{name} is stale: run its compare --report-only"


def test_update_page_replaces_only_what_lies_between_the_markers(tmp_path):
    begin, end = report.MARKS["report"]
    c_begin, c_end = report.MARKS["closing"]
    page = tmp_path / "page.md"
    page.write_text(f"intro\n{begin}old\n{end}\nprose\n{c_begin}old closing\n{c_end}\n", encoding="utf-8")
    assert report.update_page(page, "**Verdict**\n\n| # | claim |\n\nNot run yet (3 runs): x.")
    text = page.read_text(encoding="utf-8")
    assert text == f"intro\n{begin}**Verdict**\n\n| # | claim |\n{end}\nprose\n{c_begin}Not run yet (3 runs): x.\n{c_end}\n"
    assert not report.update_page(page, "**Verdict**\n\n| # | claim |\n\nNot run yet (3 runs): x.")
    page.write_text("no markers", encoding="utf-8")
    with pytest.raises(ValueError, match="marker"):
        report.update_page(page, "x")


def test_many_claims_are_corrected_together_and_the_table_says_what_changed():
    """Alone, the second row (p ~ 0.02) is refuted; among five rows Holm needs p < 0.01 for the
    smallest, and the table says the row would have been refuted alone."""
    zero = dict.fromkeys(range(5), 0.0)
    rows = [report.Claim("1", "A >= B", "a", "b", dict(enumerate([2.0, 2.1, 1.9, 2.2, 2.05])), zero).judge(),
            report.Claim("2", "A >= C", "a", "c", dict(enumerate([-0.3, -0.8, -0.1, -0.6, -0.45])), zero).judge()]
    rows += [report.Claim("R", "check", "a", "d", dict(enumerate([0.3, -0.4, 0.1, -0.2, 0.15])), zero).judge()
             for _ in range(3)]
    assert [r["verdict"] for r in rows[:2]] == ["held", "refuted"]
    report.correct_for_many_claims(rows[:2], rows[2:])
    assert [r["verdict"] for r in rows] == ["held"] + ["inconclusive"] * 4
    assert rows[1]["alone"] == "refuted" and rows[1]["p_holm"] == pytest.approx(4 * rows[1]["p"])
    table = report.claims_table(rows)
    assert "**inconclusive** (alone: refuted)" in table and "| p (Holm) |" in table


def test_a_comparison_in_another_folder_leaves_the_page_alone(tmp_path):
    """Only the folder a page cites regenerates it: a second comparison under docs/experiments/ (say, a
    search of the e2e recipes in experiments/e2e-mads) must not overwrite docs/results_e2e.md."""
    docs = tmp_path / "docs"
    (docs / "experiments" / "e2e").mkdir(parents=True)
    begin, end = report.MARKS["report"]
    c_begin, c_end = report.MARKS["closing"]
    page = docs / "results_e2e.md"
    page.write_text(f"See experiments/e2e/.\n{begin}old\n{end}\n{c_begin}\n{c_end}\n", encoding="utf-8")
    report.write(docs / "experiments" / "e2e-mads", "**Verdict** new", "results_e2e.md")
    assert "old" in page.read_text() and (docs / "experiments" / "e2e-mads" / "results.md").is_file()
    report.write(docs / "experiments" / "e2e", "**Verdict** new", "results_e2e.md")
    assert "old" not in page.read_text()
