"""The lessons as static HTML pages, to read in a browser or put on a course website.

    python3 lessons/make_html.py OUT            # every lesson, and OUT/index.html listing them
    python3 lessons/make_html.py OUT 08 10      # only these lessons (and the index)

Each page holds the lesson's cells in order: prose as HTML, code as code. Nothing is run, so a page
shows no output and no figure: run the lesson (`python3 lessons/run.py NN --step`) for those. The
prose uses a small part of Markdown, and this file converts exactly that part: headings, paragraphs,
bulleted and numbered lists, indented blocks (formulas and commands, shown as written), `code`,
**bold** and *italic*. Pages need no network and no package beyond the standard library.
"""
import argparse
import html
import re
import sys
from pathlib import Path

import catalogue
from cells import LessonError, parse_cells

STYLE = """body { max-width: 52rem; margin: 2rem auto; padding: 0 1rem; font: 16px/1.5 sans-serif; color: #222; }
pre { background: #f5f5f5; padding: 0.6rem 0.8rem; overflow-x: auto; font-size: 14px; }
pre.code { border-left: 3px solid #4a7; }
pre.exercise { border-left: 3px solid #c84; }
code { background: #f2f2f2; padding: 0 0.2rem; }
nav { margin: 1rem 0; } table { border-collapse: collapse; } td, th { padding: 0.2rem 0.6rem; text-align: left; }"""
INLINE = [(re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
          (re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])"), r"<em>\1</em>")]


def inline(text):
    """Escape, then mark up `code` (its inside left alone), **bold** and *italic*."""
    pieces = re.split(r"(`[^`]+`)", html.escape(text, quote=False))
    out = []
    for piece in pieces:
        if piece.startswith("`") and piece.endswith("`") and len(piece) > 1:
            out.append(f"<code>{piece[1:-1]}</code>")
        else:
            for pattern, replacement in INLINE:
                piece = pattern.sub(replacement, piece)
            out.append(piece)
    return "".join(out)


def prose_to_html(text):
    """A lesson's prose (the Markdown subset above) as HTML."""
    out, paragraph, items, kind, block = [], [], [], None, []

    def flush():
        nonlocal paragraph, items, kind, block
        if paragraph:
            out.append(f"<p>{inline(' '.join(paragraph))}</p>")
        if items:
            out.append(f"<{kind}>" + "".join(f"<li>{inline(i)}</li>" for i in items) + f"</{kind}>")
        if block:
            out.append(f"<pre>{html.escape(chr(10).join(block).rstrip())}</pre>")
        paragraph, items, kind, block = [], [], None, []

    for line in text.split("\n"):
        heading = re.match(r"^(#{1,6}) (.*)$", line)
        bullet = re.match(r"^\s*[-*] (.*)$", line)
        number = re.match(r"^\s*\d+\. (.*)$", line)
        if line.startswith("    ") and not items:
            if paragraph:
                flush()
            block.append(line[4:])
        elif not line.strip():
            if not block:
                flush()
            else:
                block.append("")
        elif heading:
            flush()
            level = len(heading.group(1))
            out.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif bullet or number:
            wanted = "ul" if bullet else "ol"
            if kind != wanted or paragraph or block:
                flush()
            kind = wanted
            items.append((bullet or number).group(1))
        elif items:
            items[-1] += " " + line.strip()              # a list item's continuation line
        else:
            if block:
                flush()
            paragraph.append(line.strip())
    flush()
    return "\n".join(out)


def page(title, body, up=None):
    nav = f'<nav><a href="{up}">all lessons</a></nav>' if up else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}</title>\n"
            f"<style>\n{STYLE}\n</style>\n</head>\n<body>\n{nav}\n{body}\n{nav}\n</body>\n</html>\n")


def lesson_page(path):
    """One lesson as an HTML page: prose cells as HTML, code cells as code blocks."""
    parts = []
    for cell in parse_cells(path):
        if cell.kind == "markdown":
            parts.append(prose_to_html(cell.prose()))
        elif cell.source:
            style = "exercise" if cell.is_exercise else "code"
            label = f'<p><small>{html.escape(cell.title)}</small></p>\n' if cell.title else ""
            parts.append(f'{label}<pre class="{style}"><code>{html.escape(cell.source, quote=False)}</code></pre>')
    return page(f"Lesson {path.stem[:2]}: {catalogue.title(path)}", "\n".join(parts), up="index.html")


def index_page(lessons):
    rows = "\n".join(f'<tr><td>{lesson["number"]}</td><td><a href="{lesson["path"].stem}.html">'
                     f'{inline(lesson["title"])}</a></td><td>{inline(lesson["objective"])}</td>'
                     f'<td>{html.escape(lesson["time"])}</td></tr>' for lesson in lessons)
    body = ("<h1>tinymix lessons: from autograd to AdaMix</h1>\n<p>Each page shows a lesson's prose and code; "
            "run a lesson with <code>python3 lessons/run.py NN --step</code> to see its output and figures.</p>\n"
            "<table>\n<tr><th>#</th><th>lesson</th><th>objective</th><th>runs in</th></tr>\n"
            f"{rows}\n</table>")
    return page("tinymix lessons", body)


def write_html(out, numbers=None):
    """Write the chosen lessons (all by default) and index.html into `out`; returns the paths."""
    out = Path(out)
    lessons = catalogue.lessons()
    unknown = sorted(set(numbers or ()) - {lesson["number"] for lesson in lessons})
    if unknown:
        raise LessonError(f"no lesson {', '.join(unknown)}; lessons are "
                          f"{', '.join(lesson['number'] for lesson in lessons)}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for lesson in lessons:
        if numbers is None or lesson["number"] in numbers:
            target = out / f"{lesson['path'].stem}.html"
            target.write_text(lesson_page(lesson["path"]), encoding="utf-8")
            written.append(target)
    (out / "index.html").write_text(index_page(lessons), encoding="utf-8")
    return written + [out / "index.html"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder for the pages (made if missing)")
    parser.add_argument("lessons", nargs="*", help='lesson numbers ("08" or "8"); default: every lesson')
    args = parser.parse_args(argv)
    numbers = [f"{int(n):02d}" if n.isdigit() else n for n in args.lessons] or None
    try:
        written = write_html(args.out, numbers)
    except (LessonError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(written) - 1} lesson page(s) and index.html written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
