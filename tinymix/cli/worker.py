"""One run of a comparison, in a process of its own:

    python3 -m tinymix.cli.worker RUN_FOLDER

reads RUN_FOLDER/request.json (written by protocol.run_all), trains, and leaves results.json there
(written last, atomically: its presence means the run finished). Nothing but JSON crosses the process
boundary. The request names its task: "nlu" (movie reviews) or "e2e" (data-to-text). A run whose loss
stops being finite finishes with {"diverged": reason} (protocol.execute).
"""
import sys
from pathlib import Path

from .. import backend
from ..store import checkpoint
from ..experiments import domains, e2e, mos, nlu, porting, protocol

TASKS = {"nlu": nlu.run_request, "e2e": e2e.run_request, "e2e-porting": porting.run_request,
         "nlu-domains-merge": domains.merge_request, "nlu-mos": mos.run_request}


def main(folder):
    backend.reuse_freed_memory()
    request = checkpoint.load_json(Path(folder) / "request.json")
    if request.get("task") not in TASKS:
        raise ValueError(f"{Path(folder) / 'request.json'} names no known task: {request.get('task')!r}")
    protocol.execute(folder, TASKS[request["task"]])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python3 -m tinymix.cli.worker RUN_FOLDER")
    main(sys.argv[1])
