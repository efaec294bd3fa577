"""Fine-tuning the tiny GPT on the E2E-style task: the loss sees target tokens only, merging and
folding change nothing, parameter counts, bad inputs, and the command line."""
import json

import numpy as np
import pytest

from tinymix import backend, e2e, peft, pretrained
from tinymix.e2e import finetune
from tinymix.backend import xp
from tinymix.nn import Dropout
from tinymix.tensor import Tensor

from numeric import assert_close

pytestmark = pytest.mark.numerics


def test_batches_predict_the_sentence_and_ignore_prompt_and_padding():
    pairs = [([10, 11, 12], [20, 21, 1]), ([10, 11], [20, 1])]
    inputs, targets = finetune.make_batch(pairs, pad_id=0)
    I = finetune.IGNORE
    # rows are prompt + sentence; inputs drop the last token, targets are the next tokens
    assert inputs.tolist() == [[10, 11, 12, 20, 21], [10, 11, 20, 0, 0]]
    assert targets.tolist() == [[I, I, 20, 21, 1], [I, 20, 1, I, I]]


def test_the_loss_has_no_gradient_on_prompt_or_padding_positions():
    pairs = [([5, 6, 7], [8, 9, 1]), ([5, 6], [9, 1])]
    inputs, targets = finetune.make_batch(pairs, pad_id=0)
    logits = Tensor(backend.host_normal((2, 5, 12), 1.0), requires_grad=True)
    loss = finetune.lm_loss(logits, targets, label_smoothing=0.1)
    loss.backward()
    grad = backend.to_numpy(logits.grad)
    ignored = backend.to_numpy(targets) == finetune.IGNORE
    assert abs(grad[ignored]).max() == 0.0 and abs(grad[~ignored]).min() > 0.0
    # and without smoothing the value is the mean of -log p(target) over the 5 target tokens
    logp = backend.to_numpy(logits.data) - backend.to_numpy(xp.log(xp.exp(logits.data).sum(axis=-1, keepdims=True)))
    expected = -sum(logp[b, t, y] for b, row in enumerate(targets.tolist()) for t, y in enumerate(row) if y >= 0) / 5
    assert finetune.lm_loss(logits, targets).item() == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def tiny_gpt():
    return finetune.build_model(finetune.NLGConfig(method="lora"))


def test_target_logits_are_the_full_logits_at_the_target_positions(tiny_gpt):
    model, tokenizer = tiny_gpt
    encoder = finetune.Encoder(tokenizer, 128)
    pairs, _ = finetune.encode_pairs(encoder, e2e.make_splits(3, 1, 1)["train"])
    inputs, targets = finetune.make_batch(pairs, encoder.pad_id)
    model.eval()
    full = backend.to_numpy(model(inputs).data)                               # (B, T, V)
    picked = backend.to_numpy(finetune.target_logits(model, inputs, targets).data)  # (n, V)
    mask = targets != finetune.IGNORE
    assert picked.shape == (int(mask.sum()), full.shape[-1])
    assert_close(picked, full[mask])              # logits up to ~24: judged at their scale


def test_pairs_that_do_not_fit_the_window_are_dropped_and_counted(tiny_gpt):
    _, tokenizer = tiny_gpt
    example = e2e.Example({"name": "The Eagle", "food": "Italian"}, ["The Eagle serves Italian food."], ["serves"])
    roomy, tight = finetune.Encoder(tokenizer, 128), finetune.Encoder(tokenizer, 12)
    prompt, target = roomy.pair(example.mr, example.references[0])
    assert target[-1] == roomy.end_id and roomy.text(target[:-1]) == example.references[0]
    assert tight.pair(example.mr, example.references[0]) is None
    assert finetune.encode_pairs(tight, [example, example]) == ([], 2)


def test_parameter_counts_per_method():
    counts = {}
    for method in ("lora", "adamix-lora", "adamix", "full"):
        model, _ = finetune.build_model(finetune.NLGConfig(method=method))
        counts[method] = (model.num_parameters(trainable_only=True), peft.merged_parameter_count(model),
                          model.num_parameters())
    layers, hidden, rank, experts, bottleneck = 4, 128, 4, 8, 8
    lora = layers * 2 * (rank * hidden + hidden * rank)                      # A and B on query and value
    assert counts["lora"][:2] == (lora, lora)
    assert counts["adamix-lora"][:2] == (layers * 2 * (experts * rank * hidden + hidden * rank), lora)
    adapter = layers * (hidden * bottleneck + bottleneck + bottleneck * hidden + hidden)
    assert counts["adamix"][1] == adapter
    assert counts["full"][0] == counts["full"][1] == counts["full"][2]      # every weight trains
    model, _ = finetune.build_model(finetune.NLGConfig(method="lora", also_train="word_embeddings"))
    assert model.num_parameters(trainable_only=True) == lora + 2048 * hidden  # + the tied embeddings
    with pytest.raises(ValueError, match="no parameter name contains 'nope'"):
        finetune.build_model(finetune.NLGConfig(method="lora", also_train="nope"))


def test_a_short_adamix_lora_run_merges_and_folds_without_changing_the_model(tmp_path):
    cfg = finetune.NLGConfig(method="adamix-lora", num_experts=2, steps=2, batch_size=4, train_size=8,
                        validation_size=2, test_size=2, eval_every=1, decoding="greedy", max_new_tokens=4,
                        progress=False, out=str(tmp_path / "run"))
    splits = e2e.make_splits(8, 2, 2, seed=0)
    result = finetune.train(cfg, splits)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["config"]["lr"] == finetune.methods.METHODS["adamix-lora"].lr["e2e"] == 1e-3   # the rate used
    terms = json.loads((tmp_path / "run" / "losses.json").read_text())   # the loss and its two terms per step
    assert terms["loss"] == result["losses"] and terms["consistency_weight"] == cfg.consistency_weight
    assert terms["loss"] == pytest.approx([t + cfg.consistency_weight * c
                                           for t, c in zip(terms["task"], terms["consistency"])], rel=1e-5)
    # merged (mean of A's, shared B) and folded into W: the test loss is that of the averaged model
    assert result["test_loss_merged"] == pytest.approx(result["test_loss_unmerged"], abs=1e-4)
    assert [h["step"] for h in result["history"]] == [1, 2] and len(result["losses"]) == 2
    assert result["trainable_parameters"] == 4 * 2 * (2 * 4 * 128 + 128 * 4)
    assert result["merged_parameters"] == 4 * 2 * (4 * 128 + 128 * 4)
    assert len(result["samples"]) == 2 and 0.0 <= result["slot_error_rate"] <= 100.0
    assert result["dropped_pairs"] == 0
    model = result["model"]
    assert not finetune.adamix.mixtures(model)                             # one LoRA per site remains


def test_the_low_memory_step_trains_the_same_model():
    settings = dict(method="adamix-lora", num_experts=2, steps=3, batch_size=4, train_size=8,
                    validation_size=2, test_size=2, eval_every=3, decoding="greedy", max_new_tokens=2,
                    lora_dropout=0.1, model_dropout=0.1, progress=False)
    splits = e2e.make_splits(8, 2, 2, seed=0)
    normal = finetune.train(finetune.NLGConfig(**settings), splits)
    low = finetune.train(finetune.NLGConfig(**settings, low_memory=True), splits)
    np.testing.assert_allclose(low["losses"], normal["losses"], rtol=1e-5)
    assert low["test_loss_merged"] == pytest.approx(normal["test_loss_merged"], rel=1e-5)


def test_frozen_weights_stay_frozen(tiny_gpt):
    model, tokenizer = finetune.build_model(finetune.NLGConfig(method="lora"))
    before = {n: p.data.copy() for n, p in model.named_parameters() if not p.requires_grad}
    encoder = finetune.Encoder(tokenizer, 128)
    pairs, _ = finetune.encode_pairs(encoder, e2e.make_splits(4, 1, 1)["train"])
    inputs, targets = finetune.make_batch(pairs, encoder.pad_id)
    model.train()
    loss = finetune.lm_loss(model(inputs), targets, 0.1)
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in before)
    assert all(bool((p.data == before[n]).all()) for n, p in model.named_parameters() if n in before)


def test_bad_inputs_to_generation(tiny_gpt):
    model, tokenizer = tiny_gpt
    encoder = finetune.Encoder(tokenizer, model.transformer.config.max_positions)
    cfg = finetune.NLGConfig(decoding="greedy", max_new_tokens=3)
    with pytest.raises(ValueError, match="empty meaning representation"):
        finetune.generate(model, encoder, [{}], cfg)
    with pytest.raises(ValueError, match="unknown slot"):
        finetune.generate(model, encoder, [{"name": "The Eagle", "wifi": "yes"}], cfg)
    with pytest.raises(ValueError, match="context window is 128"):
        finetune.generate(model, encoder, [{"name": "The " + "Very " * 150 + "Long Eagle"}], cfg)
    found = finetune.generate(model, encoder, [{"name": "The Eagle", "food": "Italian"}], cfg)
    assert len(found) == 1 and len(found[0].ids) <= 3


def test_model_dropout_sets_the_gpts_dropout_and_leaves_loras():
    model, _ = finetune.build_model(finetune.NLGConfig(method="lora", model_dropout=0.0, lora_dropout=0.1))
    rates = {name: module.p for name, module in model.named_modules() if isinstance(module, Dropout)}
    lora = {name: p for name, p in rates.items() if "query" in name or "value" in name}
    assert lora and set(lora.values()) == {0.1}                  # LoRA's dropout on the input of A
    assert {p for name, p in rates.items() if name not in lora} == {0.0}   # the GPT's own: off
    model, _ = finetune.build_model(finetune.NLGConfig(method="full", model_dropout=0.2))
    assert {module.p for _, module in model.named_modules() if isinstance(module, Dropout)} == {0.2}
    with pytest.raises(ValueError, match=r"--model-dropout must be a number in \[0, 1\)"):
        finetune.NLGConfig(model_dropout=1.0)


def test_a_data_seed_other_than_the_pretraining_one_is_refused():
    seen = pretrained.tiny_gpt_record()["e2e_data_seed"]
    with pytest.raises(ValueError, match=f"from the training combinations of data seed {seen}"):
        finetune.train(finetune.NLGConfig(method="lora", data_seed=seen + 1, steps=1, progress=False))


def test_patience_stops_the_e2e_run_after_that_many_evaluations_without_a_better_validation_loss(monkeypatch):
    losses = iter([5.0, 4.0, 4.5, 4.2, 3.0, 3.0])
    original = finetune.evaluate_loss
    calls = []

    def scripted(model, pairs, pad_id, batch_size=32):
        calls.append(1)
        return next(losses) if len(calls) <= 6 else original(model, pairs, pad_id, batch_size)
    monkeypatch.setattr(finetune, "evaluate_loss", scripted)
    cfg = finetune.NLGConfig(method="lora", steps=60, eval_every=10, patience=2, train_size=16, validation_size=2,
                             test_size=1, beam_width=1, max_new_tokens=2, progress=False, test=False)
    result = finetune.train(cfg)
    assert (result["best_step"], result["steps_trained"]) == (20, 40)
    assert [h["step"] for h in result["history"]] == [10, 20, 30, 40]
