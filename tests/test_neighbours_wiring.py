"""The neighbours as `--method` values: each trains end to end through `train` on the tiny random
encoder, its hooks run, its counts are reported, and its saved merged adapter loads back into a fresh
model with the same outputs."""
import dataclasses

import numpy as np
import pytest

from tinymix import backend, methods, peft
from tinymix.store import checkpoint
from tinymix.cli.helptext import field_help
from tinymix.neighbours import loretta, phm
from tinymix.pretrained import load_pretrained
from tinymix.tensor import no_grad
from tinymix.train import train
from tinymix.transformer import SequenceClassifier
from test_train import tiny_config, tiny_splits

pytestmark = pytest.mark.numerics

NEIGHBOURS = ("adalora", "phm", "mixphm", "hadamard", "adamix-hadamard", "loretta-rep", "loretta-adp", "prefix",
              "ft-top2", "unipelt", "unipelt-ap")
# The tiny encoder is 32 wide: PHM's reduction 12 and LoRETTA-adp's bottleneck 64 do not fit it.
SMALLER = {"phm": lambda s: phm.PHMAdapterConfig(reduction_factor=2),
           "mixphm": lambda s: phm.MixPHMConfig(reduction_factor=2, num_experts=s.num_experts),
           "loretta-adp": lambda s: loretta.LorettaAdpConfig(bottleneck=8)}


@pytest.fixture
def tiny_methods(monkeypatch):
    for name, build in SMALLER.items():
        monkeypatch.setitem(methods.METHODS, name, dataclasses.replace(methods.METHODS[name], build=build))


def logits(model, tokenizer, texts):
    model.eval()
    with no_grad():
        return backend.to_numpy(model(*tokenizer(texts)).data)


@pytest.mark.parametrize("method", NEIGHBOURS)
def test_each_neighbour_trains_counts_and_its_merged_adapter_loads_back(method, tiny_methods, tmp_path):
    splits = tiny_splits()
    result = train(tiny_config(tmp_path, method=method, epochs=2, lr=1e-2), splits)
    losses = result["losses"]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert result["model"].peft_config.method == methods.METHODS[method].build(methods.Settings()).method
    assert 0 < result["merged_parameters"] <= result["trainable_parameters"]
    if method != "adalora":     # the deployed model is what was counted (AdaLoRA's masked triplets stay stored)
        assert result["model"].num_parameters(trainable_only=True) == result["merged_parameters"]
    texts = splits["test"].texts[:8]
    backend.manual_seed(0)             # train's seed before it builds the model: the same frozen base
    fresh = SequenceClassifier(load_pretrained("random-tiny", max_length=64)[0], 2)
    loaded = peft.load_adapter(fresh, tmp_path / "run" / "merged")
    np.testing.assert_allclose(logits(loaded, result["tokenizer"], texts),
                               logits(result["model"], result["tokenizer"], texts), rtol=1e-4, atol=1e-5)



@pytest.mark.parametrize("method", methods.names(methods.E2E)[8:])
def test_each_decoder_neighbour_trains_on_e2e_and_deploys_without_changing_the_model(method, tmp_path):
    from tinymix import e2e
    from tinymix.e2e import finetune
    cfg = finetune.NLGConfig(method=method, steps=3, batch_size=4, train_size=8, validation_size=2, test_size=2,
                             eval_every=1, decoding="greedy", max_new_tokens=4, progress=False,
                             out=str(tmp_path / "run"))
    result = finetune.train(cfg, e2e.make_splits(8, 2, 2, seed=0))
    assert len(result["losses"]) == 3 and all(np.isfinite(result["losses"]))
    assert result["test_loss_merged"] == pytest.approx(result["test_loss_unmerged"], abs=1e-4)
    assert 0 < result["merged_parameters"] <= result["trainable_parameters"]
    assert (tmp_path / "run" / "merged" / "adapter_model.safetensors").is_file()


def test_adalora_masks_at_its_scheduled_steps_and_adds_its_orthogonality_term(monkeypatch, tmp_path):
    calls = []
    real = methods.adalora.orthogonal_regularizer
    monkeypatch.setattr(methods.adalora, "orthogonal_regularizer", lambda *a: calls.append(1) or real(*a))
    result = train(tiny_config(method="adalora", epochs=4, lr=1e-2), tiny_splits())      # 24 steps
    model, config = result["model"], result["model"].peft_config
    assert (config.total_step, config.init_r, config.target_r) == (24, 6, 4)
    assert len(calls) == 24
    layers = methods.adalora.svd_layers(model)
    assert sum(int(layer.kept.sum()) for _, layer in layers) == 4 * len(layers)          # the final budget
    for _, layer in layers:
        masked = backend.to_numpy(layer.lora_E.data).reshape(-1)[~layer.kept]
        assert np.all(masked == 0)
    assert result["merged_parameters"] == result["trainable_parameters"] - 2 * len(layers) * (32 + 32 + 1)


def test_mixphm_adds_its_redundancy_term_and_trains_in_one_pass(tiny_methods, monkeypatch):
    calls = []
    real = phm.redundancy_regularizer
    wrapped = lambda model, mask: calls.append(mask.shape) or real(model, mask)
    monkeypatch.setitem(methods.METHODS, "mixphm",
                        dataclasses.replace(methods.METHODS["mixphm"], extra_loss=wrapped))
    result = train(tiny_config(method="mixphm", epochs=1, lr=1e-2), tiny_splits())
    assert len(calls) == 6 and all(len(shape) == 2 for shape in calls)
    assert not methods.METHODS["mixphm"].two_passes and result["loss_terms"]["consistency"] == [0.0] * 6


def test_the_help_lists_every_neighbour_for_the_tasks_it_applies_to():
    classification, e2e_part = field_help()["method"].split("--task e2e:")
    for name in NEIGHBOURS:
        assert f"{name} (" in classification
    for name in ("adalora", "hadamard", "adamix-hadamard", "loretta-rep", "prefix", "ft-top2"):
        assert f"{name} (" in e2e_part
    for name in ("mixphm", "unipelt", "loretta-adp"):
        assert f" {name} (" not in e2e_part


def test_a_prefix_leaves_its_positions_to_the_sentences():
    from tinymix.train import build_model
    model, tokenizer = build_model(tiny_config(method="prefix", max_length=64))
    assert tokenizer.max_length == 64 - 10
    ids, _ = tokenizer(["word " * 200])
    assert ids.shape[1] == 54


def test_an_interrupted_adalora_run_resumes_with_its_scores_and_allocation(tmp_path, monkeypatch):
    """The checkpoint holds the allocator's moving averages and kept triplets: a run killed in the
    middle of the budget schedule ends with the losses and the rank pattern of an uninterrupted one."""
    from test_train import Interrupted, interrupt_at_call
    from tinymix.neighbours import adalora
    splits = tiny_splits()
    config = lambda folder, **kw: tiny_config(folder, method="adalora", epochs=3, lr=1e-2, **kw)
    before_step_6 = []          # the allocator's arrays when step 6 (the first of epoch 2) begins its allocation
    real = methods.METHODS["adalora"].after_step

    def watched(model, step):
        if step == 6:
            before_step_6.append(model.rank_allocator.state_arrays(model))
        real(model, step)
    monkeypatch.setitem(methods.METHODS, "adalora", dataclasses.replace(methods.METHODS["adalora"], after_step=watched))
    straight = train(config(tmp_path / "straight"), splits)
    with monkeypatch.context() as patch:
        interrupt_at_call(patch, 6 + 3)                      # in epoch 2: the budget is falling then
        with pytest.raises(Interrupted):
            train(config(tmp_path), splits)
    assert (tmp_path / "run" / "checkpoints" / "epoch-0001" / "method_state.safetensors").is_file()
    resumed = train(config(tmp_path, resume=True), splits)
    np.testing.assert_allclose(resumed["losses"], straight["losses"], rtol=1e-5)
    straight_state, _, resumed_state = before_step_6        # the interrupted run reached step 6 too
    assert sorted(resumed_state) == sorted(straight_state) and len(straight_state) > 8
    for name, value in straight_state.items():
        np.testing.assert_allclose(backend.to_numpy(resumed_state[name]), backend.to_numpy(value), rtol=1e-6,
                                   err_msg=name)
    kept = lambda result: [layer.kept.tolist() for _, layer in adalora.svd_layers(result["model"])]
    assert kept(resumed) == kept(straight) and not all(all(k) for k in kept(straight))
    assert resumed["merged_parameters"] == straight["merged_parameters"] < straight["trainable_parameters"]


def test_an_adalora_checkpoint_without_its_state_is_refused_on_resume(tmp_path, monkeypatch):
    from test_train import Interrupted, interrupt_at_call
    splits = tiny_splits()
    with monkeypatch.context() as patch:
        interrupt_at_call(patch, 6 + 3)
        with pytest.raises(Interrupted):
            train(tiny_config(tmp_path, method="adalora", epochs=3), splits)
    folder = tmp_path / "run" / "checkpoints" / "epoch-0001"
    (folder / "method_state.safetensors").unlink()
    manifest = checkpoint.load_json(folder / "manifest.json")
    del manifest["files"]["method_state.safetensors"]          # a checkpoint written before they kept it
    checkpoint.save_json(folder / "manifest.json", manifest)
    with pytest.raises(ValueError, match="--resume.*holds no adalora state.*--overwrite"):
        train(tiny_config(tmp_path, method="adalora", epochs=3, resume=True), splits)


def test_train_on_the_command_line_prints_a_neighbours_counts_and_its_unread_flags(capsys):
    from tinymix import cli
    cli.main(["train", "--method", "adalora", "--model", "random-tiny", "--train-size", "16", "--epochs", "1",
              "--batch-size", "8", "--bottleneck", "8", "--no-progress", "--no-test"])
    printed = capsys.readouterr().out
    assert "warning: --bottleneck does nothing with --method adalora" in printed
    assert "learning rate 0.0008 (adalora's default for classification" in printed
    trainable, deployed = [int(n.replace(",", "")) for n in
                           printed.split("trainable params ")[1].split(" deployed")[0].split(" while training, ")]
    assert deployed < trainable         # AdaLoRA's dropped triplets are not deployed


@pytest.mark.parametrize("method", ["prefix", "hadamard"])
def test_export_refuses_a_neighbours_adapter_by_name(method, tmp_path):
    from tinymix.export.peft_export import export_peft
    train(tiny_config(tmp_path, method=method, epochs=1, test=False), tiny_splits(n_train=8, n_eval=8))
    with pytest.raises(ValueError, match=f"holds {method}, which tinymix exports to no PEFT format"):
        export_peft(tmp_path / "run" / "merged", tmp_path / "exported")
