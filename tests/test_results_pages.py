"""The results pages open with the answer: a verdict paragraph, then the command's report, whose
verdict list, terms and claims table come before any other table; every term is defined before it is
used; what is not run yet comes last. The report's own order is checked in tests/test_experiments.py."""
import re
from pathlib import Path

import pytest

from tinymix.experiments import report

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["results.md", "results_e2e.md"]
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
    assert answer.strip().startswith("**No") or answer.strip().startswith("**Yes"), "the answer's first word"
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
