"""How often tinymix reads the device back, counted on the CuPy stand-in. On a GPU each device-to-host
transfer (.item(), float(), .get(), printing, `if x:` on a device value, boolean-mask indexing ...)
waits for every queued kernel: a training step that makes one wastes the GPU while Python catches up.

- training (train.py's loop, two passes or --low-memory): no transfer in a step; the losses of
  --log-every steps come back together, in one transfer;
- merged inference: no transfer in a forward; evaluation reads each batch's predictions once;
- decoding (beam search and greedy, with the KV cache): one transfer per generated token, the
  next-token log-probabilities, because the next token is chosen on the host; and two uploads, the
  chosen tokens (the next input) and the surviving beams' parents (to reorder the cache);
- lesson 16 runs its GPU cells on the stand-in, and its timed steps read nothing back.
"""
import math
import sys
from pathlib import Path

import pytest

import cupy_workloads as work
from tinymix import backend, decode, peft
from tinymix.bench.workload import build, eval_forward, make_workload
from tinymix.optim import AdamW
from tinymix.tensor import no_grad

LESSONS = Path(__file__).resolve().parent.parent / "lessons"


@pytest.mark.parametrize("low_memory", [False, True], ids=["two passes", "low memory"])
def test_a_training_step_reads_nothing_back_but_the_logged_losses(emulated_cupy, low_memory):
    splits = work.tiny_splits(n_train=48, n_eval=16)                            # 6 steps of 8 sentences
    result, marks = work.train_marking_steps(work.train_config(log_every=4, low_memory=low_memory), splits)
    assert len(result["losses"]) == 6 and all(math.isfinite(v) for v in result["losses"])
    transfers = [t for t, _ in work.differences(marks)]
    # from the start to the end of step 1, then each step: the losses of steps 1-4 come back during
    # step 5's interval, in ONE transfer; steps 5-6 after the epoch
    assert transfers == [0, 0, 0, 0, 1, 0], f"transfers per training step: {transfers}"
    # after the last step: steps 5-6's losses (1), one validation batch and one test batch (1 each),
    # the experts' spread after the epoch (1) and the routing report's distances (1)
    assert emulated_cupy.total() - marks[-1][0] == 5, dict(emulated_cupy.transfers)


def test_log_every_sets_how_often_the_losses_come_back(emulated_cupy):
    splits = work.tiny_splits(n_train=48, n_eval=16)
    _, marks = work.train_marking_steps(work.train_config(log_every=1), splits)
    assert [t for t, _ in work.differences(marks)] == [0, 1, 1, 1, 1, 1]   # each step's loss, one by one


def test_a_bare_training_step_makes_no_transfer_and_no_wait(emulated_cupy):
    """The step the bench times, under CuPy's synchronisation detector set to refuse (as bench runs it
    on a GPU): any transfer would raise."""
    import cupy
    model = work.tiny_classifier()
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = work.host_batch()
    with cupy._core.syncdetect.allow_synchronize(False):
        for low_memory in (False, True, False):
            work.bare_training_step(model, optimizer, batch, low_memory)
    assert emulated_cupy.total() == 0


def test_merged_inference_reads_back_only_the_predictions(emulated_cupy):
    from tinymix.train import build_model, evaluate
    model, tokenizer = build_model(work.train_config(method="adamix"))
    peft.merge(model)
    split = work.tiny_splits(n_train=0, n_eval=40)["test"]
    ids, mask = tokenizer(split.texts[:8])
    with no_grad():
        model.eval()(ids, mask)
    assert emulated_cupy.total() == 0                                          # a forward reads nothing
    accuracy = evaluate(model, tokenizer, split, batch_size=16)
    assert 0.0 <= accuracy <= 1.0
    assert dict(emulated_cupy.transfers) == {"get": 3}                         # 40 sentences, 3 batches


def test_the_benchmark_workload_forward_reads_nothing(emulated_cupy):
    workload = make_workload(quick=True)
    model = peft.merge(build(workload, peft.AdaMixConfig(module="adapter"))[0]).eval()
    for batch in workload.batches:
        eval_forward(model, batch)
    assert emulated_cupy.total() == 0


@pytest.mark.parametrize("use_cache", [True, False], ids=["kv cache", "no cache"])
def test_beam_search_reads_one_array_per_token(emulated_cupy, use_cache):
    model = work.tiny_decoder()
    found, marks = work.decode_marking_steps(decode.beam_search, model, [1, 2, 3], end_id=0, beam_width=4,
                                             max_new_tokens=10, no_repeat_ngram=3, use_cache=use_cache)
    assert found.ids and len(marks) >= 6
    per_call = work.differences(marks[1:], marks[0])
    # start: the prompt goes up once and the first log-probabilities come back once
    assert per_call[0] == (1, 1), per_call
    # each token: the log-probabilities come back (1); up go the chosen tokens and the parents that
    # reorder the cache, or without a cache the whole sequences
    assert set(per_call[1:]) == {(1, 2 if use_cache else 1)}, per_call
    assert set(emulated_cupy.transfers) == {"get"}


def test_greedy_reads_one_array_per_token(emulated_cupy):
    model = work.tiny_decoder()
    found, marks = work.decode_marking_steps(decode.greedy, model, [[1, 2], [3, 4], [5, 6]], end_id=None,
                                             max_new_tokens=8)
    assert [len(d.ids) for d in found] == [8, 8, 8]                       # one batch of 3 prompts
    assert set(work.differences(marks[1:], marks[0])) == {(1, 1)}        # per token: read 1, send 1
    assert len(marks) == 1 + 8                                            # start + 7 steps for 8 tokens


def test_lesson_16_runs_its_gpu_cells_and_its_timed_steps_read_nothing(emulated_cupy, monkeypatch, capsys):
    """Lesson 16's GPU cells, never run before without a GPU: parity of a MiniLM-sized AdaMix step
    on NumPy and on the (stand-in) device, and timing between two synchronize() calls."""
    monkeypatch.syspath_prepend(str(LESSONS))
    monkeypatch.setenv("TINYMIX_FAST", "1")
    import run as runner
    import support
    monkeypatch.setattr(support, "FAST", True)
    path = runner.lesson_files()["16"]
    module = type(sys)("lesson_16_on_the_stand_in")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    per_cell = []
    for cell in runner.parse_cells(path):
        if cell.kind == "code":
            before = emulated_cupy.total()
            exec(compile("\n" * (cell.first_line - 1) + "\n".join(cell.lines), str(path), "exec"), module.__dict__)
            per_cell.append(emulated_cupy.total() - before)
    output = capsys.readouterr().out
    assert module.GPU is True and "routes" in output and "to finish" in output, output[-2000:]
    marks = emulated_cupy.sync_marks
    assert len(marks) >= 2 and marks[-1] == marks[-2], f"transfers at each synchronize: {marks}"
    print(f"lesson 16 transfers per code cell: {per_cell}")
    assert backend.name == "numpy"                                         # the lesson switches back
