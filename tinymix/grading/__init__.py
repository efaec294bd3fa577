"""The offline autograder (see tinymix/grade.py for the command and lessons/assignments/README.md).

Grader side: cli.py (the command), submissions.py (which files, which students), runner.py (a
submission in its own process, with limits), sandbox.py (bubblewrap, or the fallback), channel.py
(the child's events, checked), judge.py (outcomes -> task results), compare.py (expected vs got),
report.py (text, CSV, JSON), stubs.py (stubs == registry).
Both sides: wire.py (values as JSON + safetensors) and calling.py (how a task function is called).
Submission side: child.py (the process) and guard.py (what it refuses).

This file imports nothing: the submission's process loads wire.py, calling.py and guard.py through it.
"""
