"""Merging operators (tinymix/merging.py): task arithmetic, TIES and PCB on small examples worked by hand,
the same tensors as Hugging Face PEFT's merge utilities where PEFT has the operator, the AdaMix merge with
an operator instead of the mean, and `python3 -m tinymix merge` on a tiny random model."""
import json
import math

import numpy as np
import pytest

from numeric import assert_close
from test_cli import one_error_line, run_cli, write_task
from test_train import tiny_config

from tinymix import adamix, backend, merging, peft
from tinymix.store import assets, checkpoint
from tinymix.tensor import no_grad
from tinymix.train import TrainConfig, build_model, train

pytestmark = pytest.mark.numerics


def host(array):
    return np.asarray(backend.to_numpy(array), dtype=np.float64)


def dev(array):
    """A host array on the backend's device (what the building blocks below take; the operators take either)."""
    return backend.from_numpy(np.asarray(array, dtype=np.float32))


def rows(*values):
    return [np.array(v, dtype=np.float32) for v in values]


# ---- task arithmetic and TIES, by hand -----------------------------------------------------------------

def test_task_arithmetic_and_the_mean_by_hand():
    tau = rows([1, -2, 3], [3, 2, -1])
    assert host(merging.task_arithmetic(tau)).tolist() == [4, 0, 2]                  # tau_1 + tau_2
    assert host(merging.task_arithmetic(tau, 0.5)).tolist() == [2, 0, 1]             # lambda = 1/n: the mean
    assert host(merging.mean(tau)).tolist() == [2, 0, 1]
    assert host(merging.task_arithmetic(tau, 1.0, weights=[2, 1])).tolist() == [5, -2, 5]   # 2 tau_1 + tau_2


def test_trim_keeps_the_top_k_magnitudes_and_every_tie_at_the_threshold():
    delta = np.array([[0.5, -3.0], [2.0, -0.1]], dtype=np.float32)
    assert host(merging.trim(delta, 0.5)).tolist() == [[0, -3], [2, 0]]     # k = int(0.5 * 4) = 2, shape kept
    assert host(merging.trim(delta, 0.3)).tolist() == [[0, -3], [0, 0]]     # k = int(1.2) = 1
    assert host(merging.trim(delta, 1.0)).tolist() == host(delta).tolist()
    assert host(merging.trim(delta, 0.2)).tolist() == [[0, 0], [0, 0]]      # k = int(0.8) = 0: nothing
    tied = np.array([1.0, -1.0, 0.5, 0.2], dtype=np.float32)
    assert host(merging.trim(tied, 0.25)).tolist() == [1, -1, 0, 0]         # k = 1, and |-1| ties with |1|


def test_ties_by_hand():
    # tau_1 = [ 1.5, -0.5, 0.25, -2,    1  ]   trim to k = int(0.6 * 5) = 3 entries each:  [ 1.5,  0, 0,    -2, 1]
    # tau_2 = [ 1,    4,  -0.5,   0.25, 3  ]                                                 [ 1,    4, 0,     0, 3]
    # tau_3 = [-4,   -3,   0.75, -0.25, 0.5]                                                 [-4,   -3, 0.75,  0, 0]
    # elected sign: sgn of the column sums [-1.5, 1, 0.75, -2, 4] -> [-, +, +, -, +]; the mass elects
    #   column 0's sign, not the count (two of its three kept entries are positive)
    # disjoint mean over the entries that agree: [-4 / 1, 4 / 1, 0.75 / 1, -2 / 1, (1 + 3) / 2]
    tau = rows([1.5, -0.5, 0.25, -2, 1], [1, 4, -0.5, 0.25, 3], [-4, -3, 0.75, -0.25, 0.5])
    trimmed = np.stack([host(merging.trim(t, 0.6)) for t in tau]).astype(np.float32)
    assert trimmed.tolist() == [[1.5, 0, 0, -2, 1], [1, 4, 0, 0, 3], [-4, -3, 0.75, 0, 0]]
    sign = merging.elect_sign(dev(trimmed))
    assert host(sign).tolist() == [-1, 1, 1, -1, 1]
    assert host(merging.disjoint_mean(dev(trimmed), sign)).tolist() == [-4, 4, 0.75, -2, 2]
    assert host(merging.ties(tau, density=0.6)).tolist() == [-4, 4, 0.75, -2, 2]
    assert host(merging.ties(tau, 2.0, density=0.6)).tolist() == [-8, 8, 1.5, -4, 4]     # times lambda
    # per-task weights (as PEFT): the sign is elected unweighted, the agreeing entries are weighted
    assert host(merging.ties(tau, density=0.6, weights=[1, 1, 3])).tolist() == [-12, 4, 2.25, -2, 2]
    # a zero sum elects +: all-zero entries merge to 0 (none agrees), [1] and [-1] to 1
    assert host(merging.ties(rows([0, 1], [0, -2]), density=1.0)).tolist() == [0, -2]
    assert host(merging.ties(rows([1], [-1]), density=1.0)).tolist() == [1]


# ---- PCB, by hand ----------------------------------------------------------------------------------------

E3, E13, E34 = math.exp(3), math.exp(1 / 3), math.exp(3 / 4)


def test_pcb_on_a_3x4_example_by_hand():
    tau = np.array([[0.4, -0.2, 0.1, 0.8],
                    [0.2, 0.4, -0.1, 0.4],
                    [0.3, 0.1, 0.4, 0.2]], dtype=np.float32)      # n = 3 tasks, d = 4 entries
    # 1. clip |tau| per row at the sorted values int(4 * 1e-4) = 0 (the smallest: no change) and
    #    int(4 * (1 - 1e-4) - 1) = int(2.9996) = 2, the second largest: the largest shrinks to it.
    #    |tau_1| = [.4 .2 .1 .8] -> [.4 .2 .1 .4];  |tau_2| = [.2 .4 .1 .4] stays;  |tau_3| = [.3 .1 .4 .2] -> [.3 .1 .3 .2]
    clipped = [[0.4, -0.2, 0.1, 0.4], [0.2, 0.4, -0.1, 0.4], [0.3, 0.1, 0.3, 0.2]]
    # 2. intra = exp(n * minmax(|tau|~)^2) per row, n = 3:
    #    row 1: minmax over [.1, .4] -> [1, 1/3, 0, 1] -> exp(3 * [1, 1/9, 0, 1]) = [e^3, e^(1/3), 1, e^3]
    #    row 2: [1/3, 1, 0, 1] -> [e^(1/3), e^3, 1, e^3];   row 3: minmax over [.1, .3] -> [1, 0, 1, 1/2] -> [e^3, 1, e^3, e^(3/4)]
    intra = np.array([[E3, E13, 1, E3], [E13, E3, 1, E3], [E3, 1, E3, E34]])
    # 3. inter = tanh(tau_i * sum_j tau_j), sum_j tau_j = [0.9, 0.3, 0.4, 1.4] (the unclipped tau):
    #    row 1: tanh([.36, -.06, .04, 1.12]); row 2: tanh([.18, .12, -.04, .56]); row 3: tanh([.27, .03, .16, .28])
    inter = np.tanh([[0.36, -0.06, 0.04, 1.12], [0.18, 0.12, -0.04, 0.56], [0.27, 0.03, 0.16, 0.28]])
    got_clipped, beta = merging.pcb_balance(dev(tau))
    assert_close(got_clipped, clipped)
    assert_close(beta, intra * inter)
    # 4. drop with ratio 0.75: each row of beta clamped from below at its sorted value at int(4 * 0.25) = 1
    #    (the second smallest), then min-max normalised: the two lowest get 0, the top 1, the third
    #    (third - second) / (top - second). beta ~ row 1 [6.94 -0.084 0.040 16.22] -> keeps columns 0 and 3;
    #    row 2 [0.248 2.40 -0.040 10.20] -> columns 1 and 3; row 3 [5.29 0.030 3.19 0.578] -> columns 0 and 2.
    b = intra * inter
    w1 = (b[0, 0] - b[0, 2]) / (b[0, 3] - b[0, 2])          # about 0.426
    w2 = (b[1, 1] - b[1, 0]) / (b[1, 3] - b[1, 0])          # about 0.215
    w3 = (b[2, 2] - b[2, 3]) / (b[2, 0] - b[2, 3])          # about 0.553
    weights = [[w1, 0, 0, 1], [0, w2, 0, 1], [1, 0, w3, 0]]
    assert_close(merging.pcb_drop(beta, 0.75), weights)               # beta: pcb_balance's, on the device
    # 5. merged = sum_i weight_i * clipped_i / sum_i weight_i, column by column:
    #    [(w1 .4 + 1 .3) / (w1 + 1), w2 .4 / w2, w3 .3 / w3, (.4 + .4) / 2] ~ [0.330, 0.4, 0.3, 0.4]
    expected = [(w1 * 0.4 + 0.3) / (w1 + 1), 0.4, 0.3, 0.4]
    assert_close(merging.pcb(list(tau), ratio=0.75), expected)
    assert_close(merging.pcb(list(tau), 1.5, ratio=0.75), 1.5 * np.array(expected))


def test_pcb_drop_keeps_what_the_released_index_rule_keeps():
    beta = np.array([np.arange(20, dtype=np.float32)])        # 0, 1, ..., 19
    # ratio 0.1: threshold at sorted position int(20 * 0.9) = 18 -> only 19 is above it
    assert host(merging.pcb_drop(dev(beta), 0.1)).tolist() == [[0] * 19 + [1]]
    # ratio 0.2: position int(16.0) = 16 -> 17, 18, 19 get (x - 16) / 3
    assert_close(merging.pcb_drop(dev(beta), 0.2), [[0] * 17 + [1 / 3, 2 / 3, 1]])


def test_pcb_refuses_a_ratio_that_keeps_nothing_and_a_constant_row_is_0_not_nan():
    with pytest.raises(ValueError, match="keeps no entry of a task vector of 10 entries"):
        merging.pcb(rows(np.arange(10), np.arange(10) * -1.0), ratio=0.1)     # position int(9.0) = 9 = d - 1
    zero = np.zeros(8, dtype=np.float32)
    out = host(merging.pcb([zero, zero, zero], ratio=0.5))
    assert out.tolist() == [0] * 8                                             # the released code: NaN
    moved = np.linspace(-1, 1, 8).astype(np.float32)
    assert np.all(np.isfinite(host(merging.pcb([zero, moved], ratio=0.5))))


@pytest.mark.parametrize("operator", merging.OPERATORS)
def test_the_scale_is_a_plain_factor_of_every_operator(operator):
    tau = [np.random.default_rng(i).standard_normal((6, 5)).astype(np.float32) for i in range(3)]
    assert_close(merging.merge(operator, tau, 1.7), 1.7 * host(merging.merge(operator, tau, 1.0)))


def test_operator_choices_and_their_errors():
    with pytest.raises(ValueError, match="unknown merging operator 'median': choose one of mean, task-arithmetic"):
        merging.merge("median", rows([1]))
    with pytest.raises(ValueError, match="--keep: task-arithmetic keeps every entry"):
        merging.check_operator("task-arithmetic", 0.2)
    with pytest.raises(ValueError, match=r"--keep must be a number in \(0, 1\]"):
        merging.check_operator("ties", 1.5)
    with pytest.raises(ValueError, match="different shapes"):
        merging.ties(rows([1, 2], [1]))


def test_the_scale_is_chosen_by_the_scoring_function_alone():
    scores = {0.5: 0.7, 1.0: 0.9, 1.5: 0.8}
    best, tried = merging.choose_scale((0.5, 1.0, 1.5), scores.get)
    assert best == 1.0 and tried == [{"scale": 0.5, "score": 0.7}, {"scale": 1.0, "score": 0.9},
                                     {"scale": 1.5, "score": 0.8}]
    flat = lambda scale: 0.5
    assert merging.choose_scale((0.4, 1.0, 2.0), flat)[0] == 0.4                  # equal: the first ...
    assert merging.choose_scale((0.4, 1.2, 2.0), flat, prefer=1.0)[0] == 1.2      # ... or the nearest `prefer`
    assert merging.parse_grid("0.5,1,1.5") == (0.5, 1.0, 1.5)
    for bad in ("1,x", "0,1", "1,1", "nan"):
        with pytest.raises(ValueError, match="--scale-grid"):
            merging.parse_grid(bad)
    assert 0.25 in merging.default_grid("task-arithmetic", 4)     # 1/M: task arithmetic's mean
    assert 1.0 in merging.default_grid("ties", 4) and merging.default_grid("mean", 4) == (1.0,)


@pytest.mark.parametrize("operator", merging.OPERATORS)
def test_every_operator_gives_the_same_tensor_on_every_backend(operator, backend_name):
    """On device arrays (CuPy, or its stand-in without a GPU) as on NumPy's."""
    tau = [np.random.default_rng(i).standard_normal((12, 20)).astype(np.float32) for i in range(4)]
    backend.set_backend("numpy")
    expected = host(merging.merge(operator, tau, 1.3))
    backend.set_backend(backend_name)
    got = merging.merge(operator, [backend.from_numpy(t) for t in tau], 1.3)
    assert backend.is_array(got)
    assert_close(got, expected)


# ---- the same tensors as PEFT's merge utilities --------------------------------------------------------

def test_task_arithmetic_and_ties_give_peft_merge_utils_tensors():
    """peft.utils.merge_utils.task_arithmetic and ties on the same dense tensors, with per-task weights
    (PEFT's lambda): the same tensor out, to float32 rounding. Random values have no tie at a trim
    threshold, where PEFT's topk and this trim could keep different entries."""
    torch = pytest.importorskip("torch")
    merge_utils = pytest.importorskip("peft.utils.merge_utils")
    rng = np.random.default_rng(0)
    worst = {"task-arithmetic": 0.0, "ties": 0.0}
    for case in range(40):
        n = int(rng.integers(2, 6))
        shape = tuple(int(s) for s in rng.integers(2, 40, size=2))
        tau = [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]
        weights = rng.uniform(0.2, 2.0, n).astype(np.float32)
        density = float(rng.choice([0.1, 0.2, 0.5, 0.7]))
        as_torch = [torch.from_numpy(t) for t in tau]
        expected = {"task-arithmetic": merge_utils.task_arithmetic(as_torch, torch.from_numpy(weights)).numpy(),
                    "ties": merge_utils.ties(as_torch, torch.from_numpy(weights), density).numpy()}
        got = {"task-arithmetic": host(merging.task_arithmetic(tau, weights=weights)),
               "ties": host(merging.ties(tau, density=density, weights=weights))}
        for name in worst:
            assert_close(got[name], expected[name], rel=1e-6, err_msg=f"{name}, case {case}")
            worst[name] = max(worst[name], float(np.abs(got[name] - expected[name]).max() / np.abs(expected[name]).max()))
        # PEFT's lambda is a uniform weight: ties(scale = lambda) is PEFT's ties(weights = lambda)
        assert_close(merging.ties(tau, 1.3, density=density),
                     merge_utils.ties(as_torch, torch.full((n,), 1.3), density).numpy(), rel=1e-6)
    print(f"largest difference from PEFT, relative to the largest entry: {worst}")


# ---- the AdaMix question: an operator instead of the mean ----------------------------------------------

def experts_apart(model, seed=0):
    """Give every trainable weight random values, so that the experts differ (AdaMix-LoRA's A-experts start
    identical and its B at 0; training would move them apart)."""
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        if p.requires_grad:
            p.data = backend.from_numpy(rng.standard_normal(p.shape).astype(np.float32) * 0.3)
    return model


def tiny_model(method, **settings):
    assets.fetch("minilm")
    backend.manual_seed(0)
    model, tokenizer = build_model(tiny_config(method=method, **settings))
    return experts_apart(model), tokenizer


def outputs(model, tokenizer):
    model.eval()
    ids, mask = tokenizer(["a wonderful film", "flat and dull"])
    with no_grad():
        return host(model(ids, mask).data)


def deployed_update(site):
    """scaling * B A of a merged LoRA site."""
    return host(site.lora_B.weight.data) @ host(site.lora_A.weight.data) * site.scaling


def lora_sites(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, peft.LoRALinear)}


def test_the_mean_is_adamix_own_merge_exactly():
    for method in ("adamix", "adamix-lora"):
        model, _ = tiny_model(method)
        other, _ = tiny_model(method)
        merging.merge_mixtures(model, "mean")
        peft.merge(other)
        mine, theirs = model.state_dict(), other.state_dict()
        assert sorted(mine) == sorted(theirs)
        assert all(np.array_equal(host(mine[k]), host(theirs[k])) for k in mine), method


@pytest.mark.parametrize("sharing", ["up", "down", "none"])
def test_lora_experts_merge_through_their_products(sharing):
    """Each operator acts on the experts' Delta W_k = s B A_k (all B_j A_k pairs when nothing is shared):
    the mean and task arithmetic are exact in the factors, TIES and PCB deploy the best rank-r approximation
    of their Delta W and report its error."""
    model, _ = tiny_model("adamix-lora", sharing=sharing)
    updates = {name: [host(u) for u in merging.lora_updates(site)] for name, site in lora_sites(model).items()}
    count = {"up": 4, "down": 4, "none": 16}[sharing]
    assert all(len(u) == count for u in updates.values()) and merging.task_vector_count(model) == count
    for operator, scale in (("mean", 1.0), ("task-arithmetic", 0.3), ("ties", 1.2), ("pcb", 0.8)):
        with merging.merged(model, operator, scale) as report:
            for name, site in lora_sites(model).items():
                expected = host(merging.merge(operator, updates[name], scale))
                got = deployed_update(site)
                if operator in ("mean", "task-arithmetic"):
                    assert_close(got, expected, rel=1e-5, err_msg=f"{operator} {name}")
                    assert "rank_truncation_error" not in report
                    continue
                U, S, Vt = np.linalg.svd(expected)
                r = site.lora_A.weight.shape[0]
                assert_close(got, (U[:, :r] * S[:r]) @ Vt[:r], rel=1e-4, err_msg=f"{operator} {name}")
                error = np.linalg.norm(expected - got) / np.linalg.norm(expected)
                assert report["rank_truncation_error"][name] == pytest.approx(error, rel=1e-3, abs=1e-6)
                assert 0 < error < 1
        assert all(isinstance(site.lora_A, adamix.Mixture) or isinstance(site.lora_B, adamix.Mixture)
                   for site in lora_sites(model).values())          # the experts are back after the block


@pytest.mark.parametrize("operator", ["ties", "pcb"])
def test_full_rank_keeps_the_whole_merged_update_and_still_reports_the_cut(operator):
    """full_rank (what the merging experiment deploys: a LoRA folded into W costs nothing more at any rank):
    the site applies exactly the operator's Delta W, and the report still gives what a rank-r cut would lose."""
    model, _ = tiny_model("adamix-lora")
    updates = {name: [host(u) for u in merging.lora_updates(site)] for name, site in lora_sites(model).items()}
    with merging.merged(model, operator, 1.1, full_rank=True) as report:
        for name, site in lora_sites(model).items():
            expected = host(merging.merge(operator, updates[name], 1.1))
            assert_close(deployed_update(site), expected, rel=1e-4, err_msg=name)
            assert site.lora_A.weight.shape[0] == min(expected.shape)
            assert 0 < report["rank_truncation_error"][name] < 1


def test_ties_of_the_factors_is_not_ties_of_the_products():
    """The trap the merge avoids: TIES on the A-experts, then times B, is another (and wrong) update."""
    model, _ = tiny_model("adamix-lora")
    name, site = next(iter(lora_sites(model).items()))
    B = host(site.lora_B.weight.data)
    factors = B @ host(merging.ties([e.weight.data for e in site.lora_A.experts])) * site.scaling
    products = host(merging.ties(merging.lora_updates(site)))
    assert np.abs(factors - products).max() > 0.1 * np.abs(products).max()


def test_adapter_experts_merge_their_down_projections():
    model, _ = tiny_model("adamix")
    adapters = [m for _, m in model.named_modules() if isinstance(m, peft.Adapter)]
    before = [(a.up, [np.concatenate([host(e.weight.data).ravel(), host(e.bias.data)]) for e in a.down.experts])
              for a in adapters]
    report = merging.merge_mixtures(model, "pcb", 1.4, keep=0.2)
    assert report == {"operator": "pcb", "scale": 1.4, "sites": len(adapters), "keep": 0.2}
    for adapter, (up, vectors) in zip(adapters, before):
        assert adapter.up is up                                   # the shared up-projection stays
        merged = host(merging.pcb(vectors, 1.4, ratio=0.2))
        size = adapter.down.weight.data.size
        assert_close(adapter.down.weight.data, merged[:size].reshape(adapter.down.weight.shape))
        assert_close(adapter.down.bias.data, merged[size:])
        assert adapter.down.weight.requires_grad                  # saved as the adapter's weights


def test_merged_restores_the_experts_and_changes_the_outputs_inside():
    model, tokenizer = tiny_model("adamix-lora")
    adamix.set_inference_mode(model, "average")
    start = outputs(model, tokenizer)
    with merging.merged(model, "mean"):
        assert_close(outputs(model, tokenizer), start)              # the mean merge = "average" inference
    with merging.merged(model, "ties", 1.5):
        inside = outputs(model, tokenizer)
    assert np.abs(inside - start).max() > 1e-3
    assert np.array_equal(outputs(model, tokenizer), start) and not model.peft_merged


def test_merge_mixtures_refuses_a_model_without_experts():
    model, _ = tiny_model("lora")
    with pytest.raises(ValueError, match=r"no AdaMix mixture to merge \(method 'lora'\)"):
        merging.merge_mixtures(model, "ties")
    model, _ = tiny_model("adamix")
    peft.merge(model)
    with pytest.raises(ValueError, match="has no experts left"):
        merging.merge_mixtures(model, "ties")


# ---- python3 -m tinymix merge ------------------------------------------------------------------------------

def trained(tmp_path, task, method="adamix-lora", name="run"):
    out = tmp_path / name
    train(TrainConfig(task=str(task), method=method, model="random-tiny", epochs=1, batch_size=8, lr=1e-2,
                      progress=False, out=str(out)))
    return out


@pytest.fixture
def task(tmp_path):
    return write_task(tmp_path / "task")


def test_merge_mean_writes_the_runs_own_merged_adapter(tmp_path, task, capsys):
    run = trained(tmp_path, task)
    code, printed, err = run_cli(["merge", str(run / "best"), "--operator", "mean", "--out", str(tmp_path / "m")],
                                 capsys)
    assert code == 0, err
    mine = checkpoint.load_arrays(tmp_path / "m" / "adapter_model.safetensors")
    theirs = checkpoint.load_arrays(run / "merged" / "adapter_model.safetensors")
    assert sorted(mine) == sorted(theirs) and all(np.array_equal(mine[k], theirs[k]) for k in mine)
    saved = json.loads((tmp_path / "m" / "merge.json").read_text())
    assert saved["operator"] == "mean" and saved["scale"] == 1.0 and saved["model"] == "random-tiny"
    assert saved["validation_accuracy"] == saved["mean_validation_accuracy"]
    assert f"eval {tmp_path / 'm'}" in printed


@pytest.mark.parametrize("method", ["adamix", "adamix-lora"])
def test_merge_chooses_the_scale_on_validation_and_writes_what_it_scored(tmp_path, task, capsys, method):
    run = trained(tmp_path, task, method)
    out = tmp_path / "ties"
    code, printed, err = run_cli(["merge", str(run / "best"), "--operator", "ties", "--scale-grid", "0.5,1,3",
                                  "--keep", "0.5", "--out", str(out)], capsys)
    assert code == 0, err
    saved = json.loads((out / "merge.json").read_text())
    assert [g["scale"] for g in saved["grid"]] == [0.5, 1.0, 3.0] and saved["keep"] == 0.5
    best = max(g["validation_accuracy"] for g in saved["grid"])
    assert saved["validation_accuracy"] == best
    assert saved["scale"] in [g["scale"] for g in saved["grid"] if g["validation_accuracy"] == best]
    # the folder written is the model scored: eval on the validation file gives the chosen scale's accuracy
    # (random-tiny's frozen weights are drawn when it loads: from seed 0's generator, as in training)
    backend.manual_seed(0)
    code, printed, err = run_cli(["eval", str(out), "--split", str(task / "dev.tsv")], capsys)
    assert code == 0 and f"accuracy {best:.4f}" in printed, err


def test_merge_reads_only_the_validation_split_and_picks_its_best_scale(tmp_path, task, capsys, monkeypatch):
    run = trained(tmp_path, task)
    seen, scores = [], iter([0.6, 0.9, 0.7, 0.8])      # three scales, then the mean for reference

    def fake_evaluate(model, tokenizer, split, batch_size=128):
        seen.append(list(split.texts))
        return next(scores)
    monkeypatch.setattr("tinymix.train.evaluate", fake_evaluate)
    code, printed, err = run_cli(["merge", str(run / "best"), "--operator", "pcb", "--keep", "0.5",
                                  "--scale-grid", "0.5,2,4", "--out", str(tmp_path / "pcb")], capsys)
    assert code == 0, err
    dev = (task / "dev.tsv").read_text().splitlines()[1:]
    assert all(sorted(texts) == sorted(line.split("\t")[0] for line in dev) for texts in seen) and len(seen) == 4
    saved = json.loads((tmp_path / "pcb" / "merge.json").read_text())
    assert saved["scale"] == 2.0 and saved["validation_accuracy"] == 0.9 and saved["mean_validation_accuracy"] == 0.8
    assert "chose scale 2: validation accuracy 0.9000 (the experts' mean: 0.8000)" in printed


def test_merge_errors_are_one_line(tmp_path, task, capsys):
    run = trained(tmp_path, task)
    lora = trained(tmp_path, task, "lora", "lora")
    out = ["--out", str(tmp_path / "x")]
    cases = [
        ([str(tmp_path / "missing"), "--operator", "ties"], f"{tmp_path / 'missing'} is not a folder: give a run's best/"),
        ([str(run), "--operator", "ties"], f"{run} is a run folder: give {run / 'best'}"),
        ([str(run / "merged"), "--operator", "ties"], f"{run / 'merged'} is merged: each mixture already became"),
        ([str(lora / "best"), "--operator", "ties"], "holds no mixture of experts (method 'lora')"),
        ([str(run / "best"), "--operator", "median"], "unknown merging operator 'median': choose one of mean"),
        ([str(run / "best")], "--operator: give one of mean, task-arithmetic, ties, pcb"),
        ([str(run / "best"), "--operator", "mean", "--keep", "0.3"], "--keep: mean keeps every entry"),
        ([str(run / "best"), "--operator", "ties", "--scale-grid", "1,x"], "--scale-grid must be comma-separated"),
        ([str(run / "best"), "--operator", "mean", "--scale-grid", "1"], "--scale-grid: the mean has no scale"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(["merge", *argv, *out], capsys)
        assert code == 1 and message in one_error_line(err), (argv, err)
    code, _, err = run_cli(["merge", str(run / "best"), "--operator", "ties", "--out", str(run / "merged")], capsys)
    assert code == 1 and "already holds an adapter: choose a new or empty folder" in one_error_line(err)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "select_on_validation": False}))
    code, _, err = run_cli(["merge", str(run / "best"), "--operator", "ties", *out], capsys)
    assert code == 1 and "was trained without reading validation" in one_error_line(err)
