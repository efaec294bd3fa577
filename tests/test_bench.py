"""The benchmark at toy sizes: every measurement runs, every ratio is a positive number, the report has
a row for each, and without PyTorch the PyTorch row says so. Timings themselves are not checked (a
busy machine makes them anything); what is checked is that the benchmark measures what it says."""
import json
import sys

import numpy as np
import pytest

from tinymix import backend, bench, cli, peft
from tinymix.bench import measure, op_profile
from tinymix.bench import workload as bench_workload
from tinymix import functional as F
from tinymix.transformer import SequenceClassifier, Transformer


@pytest.fixture(scope="module")
def results():
    """One quick run, shared by the tests below (about a second)."""
    return bench.run(quick=True, rounds=1, use_torch=False, log=lambda message: None)


def test_every_measurement_is_there_and_positive(results):
    ratios = {
        "training": ["one_pass_over_two_passes", "low_memory_over_two_passes"],
        "inference": ["merged_over_single", "average_over_single", "random_over_single"],
        "memory": ["adamix_over_full", "low_memory_over_full", "one_pass_over_full", "adamix_bytes",
                   "low_memory_bytes", "one_pass_bytes", "full_bytes"],
        "forward": ["model_gflops", "matmul_gflops", "model_over_matmul"],
        "autograd": ["tracked_op_seconds", "raw_op_seconds", "matmul_tracked_over_raw"],
    }
    for section, keys in ratios.items():
        for key in keys:
            value = results[section][key]
            assert isinstance(value, float | int) and value > 0 and np.isfinite(value), (section, key, value)
    assert set(results["training"]["seconds"]) == {"two passes", "one pass", "two passes, low memory"}
    assert set(results["inference"]["seconds"]) == {"single adapter", "AdaMix merged", "AdaMix average",
                                                    "AdaMix random"}
    assert results["backend"] == backend.name


def test_memory_is_ordered_as_the_methods_store_things(results):
    # full fine-tuning keeps gradients and two AdamW moments for every weight; a second pass adds a
    # second graph of activations
    m = results["memory"]
    assert m["one_pass_bytes"] < m["adamix_bytes"] < m["full_bytes"]
    # recomputing pass 2 keeps one graph at a time, plus pass 2's boolean dropout masks
    assert m["one_pass_bytes"] <= m["low_memory_bytes"] < m["adamix_bytes"]


def test_report_has_a_row_per_measurement_and_says_torch_was_skipped(results):
    text = bench.report(results)
    for words in ("without / with the consistency pass", "low memory (recomputing pass 2) / two passes",
                  "AdaMix merged / single adapter", "random routing", "AdaMix low memory (two passes, pass 2",
                  "peak training memory", "forward GFLOP/s", "autograd", "host synchronisation",
                  "PyTorch skipped", "where the time goes", "BLAS:"):
        assert words in text, words


def test_without_pytorch_the_row_says_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)      # `import torch` now raises ImportError
    workload = bench_workload.make_workload(quick=True)
    result = measure.training(workload, rounds=1, use_torch=True)
    assert result["torch"] == "not installed" and result["speed_vs_torch"] is None
    assert "PyTorch not installed" in bench.report({**_fake_results(), "training": result})


def _fake_results():
    seconds = {name: [1.0] for name in ("single adapter", "AdaMix merged", "AdaMix average", "AdaMix random")}
    return {"backend": "numpy", "workload": "w", "threads": 1, "batch_size": 4, "padded_lengths": [5],
            "mean_sentence_length": 4.0, "rounds": 1, "load_before": (1.0,), "load_after": (1.0,), "seconds": 1.0,
            "inference": {"seconds": seconds, "merged_over_single": 1.0, "average_over_single": 1.0,
                          "random_over_single": 1.0},
            "memory": {"adamix_bytes": 3, "low_memory_bytes": 2, "one_pass_bytes": 2, "full_bytes": 4,
                       "adamix_over_full": 0.75, "low_memory_over_full": 0.5, "one_pass_over_full": 0.5},
            "forward": {"model_gflops": 1.0, "matmul_gflops": 2.0, "model_over_matmul": 0.5},
            "autograd": {"tracked_op_seconds": 2e-6, "raw_op_seconds": 1e-6, "overhead_seconds": 1e-6,
                         "matmul_tracked_over_raw": 1.0}}


def test_batches_are_padded_to_their_own_longest_sentence():
    for ids, mask, labels in bench_workload.make_workload(quick=True).batches:
        lengths = mask.sum(axis=1)
        assert ids.shape == mask.shape and ids.shape[1] == lengths.max()
        assert (ids[mask == 0] == 0).all() and (ids[mask == 1] > 0).all()
        assert labels.shape == (len(ids),)


def test_forward_flops_counts_every_linear_and_attention():
    workload = bench_workload.make_workload(quick=True)
    model = SequenceClassifier(Transformer(workload.config), 2)
    c = workload.config
    B, T, C, I, L = 3, 7, c.hidden_size, c.intermediate_size, c.num_layers
    linears = L * (4 * C * C + 2 * C * I) + 2 * C
    assert measure.forward_flops(model, B, T) == 2 * B * T * linears + L * 4 * B * T * T * C


def test_merged_adamix_has_the_single_adapters_weights_count():
    workload = bench_workload.make_workload(quick=True)
    single, _ = bench_workload.build(workload, bench_workload.SINGLE)
    merged = peft.merge(bench_workload.build(workload, bench_workload.ADAMIX)[0])
    assert merged.num_parameters() == single.num_parameters()


def test_the_command_line_runs_the_quick_benchmark(capsys):
    cli.main(["bench", "--quick", "--rounds", "1", "--no-torch"])
    out = capsys.readouterr().out
    assert "| measure | measured | ratio | target |" in out and "quick toy model" in out


@pytest.mark.parametrize("sdpa", [False, True])
def test_the_pytorch_twin_computes_the_same_function(sdpa):
    torch = pytest.importorskip("torch")
    from tinymix.bench.torch_twin import TorchTwin, max_logit_difference
    workload = bench_workload.make_workload(quick=True)
    model, _ = bench_workload.build(workload, bench_workload.ADAMIX)
    twin = TorchTwin(torch, model, sdpa=sdpa)
    ids, mask, labels = workload.batches[0]
    assert max_logit_difference(twin, model, ids, mask) < 1e-4
    twin.train_step(ids, mask, labels)             # runs, and moves only the trainable weights
    moved = {n for n, p in twin.p.items() if not torch.equal(p.detach().cpu(),
                                                               torch.from_numpy(model.state_dict()[n]))}
    assert moved and all(twin.p[n].requires_grad for n in moved)


def test_a_training_step_makes_no_float64_array(monkeypatch):
    # NumPy 2 promotes float32 with a NumPy float64 scalar to float64, silently and 4-5x slower
    # (a 4-5x slowdown, seen once): every array an op makes in the benchmark's step must stay float32
    from tinymix.tensor import Tensor
    made = []
    original = Tensor._make.__func__
    monkeypatch.setattr(Tensor, "_make", classmethod(lambda cls, data, parents, backward:
                                                     made.append(data.dtype) or original(cls, data, parents, backward)))
    workload = bench_workload.make_workload(quick=True)
    model, optimizer = bench_workload.build(workload, bench_workload.ADAMIX)
    bench_workload.train_step(model, optimizer, workload.batches[0], 1.0)
    assert made and {str(d) for d in made} == {"float32"}
    for p in model.parameters():
        assert p.dtype == np.float32 and (p.grad is None or p.grad.dtype == np.float32)
    for state in optimizer.state.values():
        assert all(v.dtype == np.float32 for k, v in state.items() if k != "step")


def test_the_command_line_writes_every_measurement_as_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    cli.main(["bench", "--quick", "--rounds", "1", "--no-torch", "--json", str(path)])
    saved = json.loads(path.read_text())
    assert saved["backend"] == backend.name and saved["training"]["one_pass_over_two_passes"] > 0
    assert set(saved) >= {"training", "inference", "memory", "forward", "autograd", "workload"}


def test_the_profile_has_every_category_for_both_passes_and_inference(results):
    profile = results["profile"]
    for column in (profile["training"]["forward"], profile["training"]["backward"], profile["inference"]):
        assert set(column) == set(op_profile.CATEGORIES)
        assert all(v >= 0 for v in column.values())
        assert column[op_profile.GEMM] > 0 and column[op_profile.NORM] > 0
    training = profile["training"]
    assert training["forward"][op_profile.GELU] > 0 and training["forward"][op_profile.DROPOUT] > 0
    assert profile["inference"][op_profile.DROPOUT] < profile["inference"][op_profile.GEMM]  # eval: none drawn
    passes = sum(training["forward"].values()) + sum(training["backward"].values())
    assert passes <= training["step"] * 1.01


def test_the_profiler_books_each_op_to_its_row_and_puts_everything_back():
    from tinymix.tensor import Tensor
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((256, 64), dtype=np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((128, 64), dtype=np.float32), requires_grad=True)
    originals = (F.linear, F.gelu, Tensor.__add__, Tensor.backward)
    with op_profile.Profiler() as profiler:
        with profiler.forward_pass():
            loss = (F.gelu(F.linear(x, w)) * 1.0).sum()
        loss.backward()
    seconds = profiler.table()
    for phase in ("forward", "backward"):
        assert seconds[phase][op_profile.GEMM] > 0 and seconds[phase][op_profile.GELU] > 0
        assert seconds[phase][op_profile.NORM] == 0 and seconds[phase][op_profile.SOFTMAX] == 0
        assert sum(seconds[phase].values()) == pytest.approx(profiler.totals[phase])
    assert (F.linear, F.gelu, Tensor.__add__, Tensor.backward) == originals


def test_one_blas_thread_is_timed_by_cpu_time_and_more_threads_by_the_wall_clock(monkeypatch):
    import time
    backend.set_backend("numpy")                # the CPU's rule (on a GPU the wall clock, tested below)
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    assert bench_workload.clock() is time.perf_counter            # the library's default: maybe many threads
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert bench_workload.clock() is time.process_time and "CPU time" in bench_workload.clock_name()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert bench_workload.clock() is time.perf_counter and bench_workload.clock_name() == "wall time"


def test_on_the_cupy_backend_the_wall_clock_times_every_thread_count(monkeypatch, backend_name):
    import time
    backend.set_backend(backend_name)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert bench_workload.clock() is (time.process_time if backend_name == "numpy" else time.perf_counter)


def test_with_pytorch_the_training_rows_name_its_build_and_compare_both_twins():
    torch = pytest.importorskip("torch")
    result = measure.training(bench_workload.make_workload(quick=True), rounds=1, use_torch=True)
    build = "CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
    assert result["torch"].startswith(f"torch {torch.__version__} ({build})")
    assert set(result["speed_vs_torch"]) == set(measure.TORCH_VARIANTS)
    assert all(speed > 0 for speed in result["speed_vs_torch"].values())
