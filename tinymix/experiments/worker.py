"""One run of a comparison, in a process of its own:

    python3 -m tinymix.experiments.worker RUN_FOLDER

reads RUN_FOLDER/request.json (written by protocol.run_all), trains, and leaves results.json there
(written last, atomically: its presence means the run finished). Nothing but JSON crosses the process
boundary. The request names its task: "nlu" (movie reviews) or "e2e" (data-to-text).

A run whose loss stops being finite has finished too — as a result, not a crash: its results.json
says {"diverged": reason}, so a learning-rate search counts that rate as the worst one and goes on.
"""
import sys
from pathlib import Path

from .. import checkpoint


def execute(folder):
    from . import nlg, nlu
    folder = Path(folder)
    request = checkpoint.load_json(folder / "request.json")
    tasks = {"nlu": nlu.run_request, "e2e": nlg.run_request}
    if request.get("task") not in tasks:
        raise ValueError(f"{folder / 'request.json'} names no known task: {request.get('task')!r}")
    try:
        tasks[request["task"]](request, folder)
    except FloatingPointError as error:
        checkpoint.save_json(folder / "results.json", {"diverged": str(error)})
        print(f"diverged: {error}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python3 -m tinymix.experiments.worker RUN_FOLDER")
    execute(sys.argv[1])
