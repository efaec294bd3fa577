"""Every setting is checked before any work starts, and the error names the flag, the value and the
valid range: train / main (TrainConfig), train --task e2e (NLGConfig), pretrain-gpt, eval."""
import math

import pytest

from tinymix import cli
from tinymix import validate
from tinymix.e2e.finetune import NLGConfig
from tinymix.methods import MAX_EXPERTS
from tinymix.train import TrainConfig, build_model


def test_check_range_messages():
    assert validate.check_range("batch_size", 8, 1, integer=True) == 8
    cases = [
        (dict(name="batch_size", value=0, low=1, integer=True), "--batch-size must be an integer >= 1, got 0"),
        (dict(name="warmup", value=1.5, low=0.0, high=1.0), r"--warmup must be a number in \[0, 1\], got 1.5"),
        (dict(name="lr", value=-0.1, low=0.0, low_open=True), "--lr must be a number > 0, got -0.1"),
        (dict(name="lr", value=math.nan, low=0.0, low_open=True), "--lr must be a number > 0, got nan"),
        (dict(name="lr", value=math.inf, low=0.0, low_open=True), "--lr must be a number > 0, got inf"),
        (dict(name="dropout", value=1.0, low=0.0, high=1.0, high_open=True), r"in \[0, 1\), got 1.0"),
        (dict(name="epochs", value=2.5, low=1, integer=True), r"an integer >= 1, got 2.5 \(float\)"),
        (dict(name="epochs", value=True, low=1, integer=True), r"got True \(bool\)"),
        (dict(name="lr", value="0.1", low=0.0), r"got '0.1' \(str\)"),
        (dict(name="max_length", value=600, low=3, high=512, integer=True, why="minilm-l6 has 512 positions"),
         r"--max-length must be an integer in \[3, 512\], got 600 \(minilm-l6 has 512 positions\)"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            validate.check_range(**arguments)
    with pytest.raises(ValueError, match="--sharing must be one of up, down; got 'left'"):
        validate.check_choice("sharing", "left", ("up", "down"))


# the cases found by trying bad numbers on `train` (each ran before, or failed late with a traceback)
TRAIN_CASES = [
    (dict(batch_size=0), "--batch-size must be an integer >= 1, got 0"),
    (dict(batch_size=-4), "--batch-size must be an integer >= 1, got -4"),
    (dict(epochs=0), "--epochs must be an integer >= 1, got 0"),
    (dict(eval_batch_size=0), "--eval-batch-size must be an integer >= 1, got 0"),
    (dict(eval_batch_size=-1), "--eval-batch-size must be an integer >= 1, got -1"),
    (dict(train_size=-5), r"--train-size must be an integer >= 0, got -5 \(0 means all\)"),
    (dict(lr=-1e-3), r"--lr must be a number >= 0, got -0.001 \(0: the method's default rate\)"),
    (dict(lr=math.nan), "--lr must be a number >= 0, got nan"),
    (dict(consistency_weight=-1.0), "--consistency-weight must be a number >= 0, got -1.0"),
    (dict(consistency_weight=math.nan), "--consistency-weight must be a number >= 0, got nan"),
    (dict(weight_decay=-1.0), "--weight-decay must be a number >= 0, got -1.0"),
    (dict(max_grad_norm=-1.0), "--max-grad-norm must be a number > 0, got -1.0"),
    (dict(max_length=0), "--max-length must be an integer >= 3, got 0"),
    (dict(max_length=1), "--max-length must be an integer >= 3, got 1"),
    (dict(num_experts=100_000), rf"--num-experts must be an integer in \[1, {MAX_EXPERTS}\], got 100000"),
    (dict(num_experts=0), rf"--num-experts must be an integer in \[1, {MAX_EXPERTS}\], got 0"),
    (dict(warmup=5.0), r"--warmup must be a number in \[0, 1\], got 5.0"),
    (dict(seed=-1), "--seed must be an integer >= 0, got -1"),
    (dict(lora_alpha=math.nan), "--lora-alpha must be a number > 0, got nan"),
    (dict(lora_rank=0), "--lora-rank must be an integer >= 1, got 0"),
    (dict(bottleneck=0), "--bottleneck must be an integer >= 1, got 0"),
    (dict(log_every=0), "--log-every must be an integer >= 1, got 0"),
    (dict(sharing="left"), "--sharing must be one of up, down, none, both; got 'left'"),
    (dict(inference="best"), "--inference must be one of average, random, fixed; got 'best'"),
    (dict(expert_init="zeros"), "--expert-init must be one of official, independent, identical; got 'zeros'"),
    (dict(expert_updates="sometimes"), "--expert-updates must be one of dense, lazy; got 'sometimes'"),
    (dict(method="sgd"), "--method must be one of adamix, .*; got 'sgd'"),
    (dict(progress="yes"), "--progress must be true or false, got 'yes'"),
    (dict(resume=True, overwrite=True), "give one of them"),
]


@pytest.mark.parametrize("settings, message", TRAIN_CASES)
def test_every_train_setting_is_checked(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_a_setting_changed_after_the_config_was_made_is_checked_again_by_train():
    from tinymix.train import train
    cfg = TrainConfig(model="random-tiny")
    cfg.batch_size = 0
    with pytest.raises(ValueError, match="--batch-size must be an integer >= 1, got 0"):
        train(cfg, splits={})          # before the data is even looked at


def test_max_length_past_the_models_positions_is_refused_when_the_model_loads():
    with pytest.raises(ValueError, match=r"--max-length must be an integer in \[3, 512\], got 600 \(minilm-l6 has "
                                         r"512 positions\)"):
        build_model(TrainConfig(max_length=600))


NLG_CASES = [
    (dict(steps=0), "--steps must be an integer >= 1, got 0"),
    (dict(lr=-1.0), "--lr must be a number >= 0, got -1.0"),
    (dict(batch_size=-2), "--batch-size must be an integer >= 1, got -2"),
    (dict(train_size=10**9), r"--train-size must be an integer in \[1, 100000\], got 1000000000"),
    (dict(test_size=0), r"--test-size must be an integer in \[1, 10000\], got 0"),
    (dict(label_smoothing=1.0), r"--label-smoothing must be a number in \[0, 1\), got 1.0"),
    (dict(lora_dropout=-0.1), r"--lora-dropout must be a number in \[0, 1\), got -0.1"),
    (dict(max_grad_norm=math.nan), r"--max-grad-norm must be a number >= 0, got nan \(0: no clipping\)"),
    (dict(num_experts=1000), rf"--num-experts must be an integer in \[1, {MAX_EXPERTS}\]"),
    (dict(consistency_weight=-1.0), "--consistency-weight must be a number >= 0"),
    (dict(beam_width=0), "--beam-width must be an integer >= 1, got 0"),
    (dict(max_new_tokens=0), "--max-new-tokens must be an integer >= 1, got 0"),
    (dict(no_repeat_ngram=-1), "--no-repeat-ngram must be an integer >= 0, got -1"),
    (dict(length_penalty=-1.0), "--length-penalty must be a number >= 0, got -1.0"),
    (dict(warmup=2.0), r"--warmup must be a number in \[0, 1\], got 2.0"),
    (dict(data_seed=-1), "--data-seed must be an integer >= 0, got -1"),
    (dict(decoding="sample"), "--decoding must be one of beam, greedy; got 'sample'"),
    (dict(method="bitfit"), "--method must be one of adamix, adamix-lora, adapter, lora, full, .*; got 'bitfit'"),
    (dict(model="minilm-l6"), "--model must be 'tiny-gpt' or a folder written by `pretrain-gpt --out FOLDER`"),
]


@pytest.mark.parametrize("settings, message", NLG_CASES)
def test_every_nlg_setting_is_checked(settings, message):
    with pytest.raises(ValueError, match=message):
        NLGConfig(**settings)


@pytest.mark.parametrize("config_json, message", [
    ("[]", "config.json is damaged: expected a JSON object, found list"),
    ('{"kind": "decoder", "hidden": 3}', r"config.json is damaged: unknown fields \['hidden'\]"),
    ('{"kind": "encoder"}', "config.json is damaged: 'vocab_size' must be an integer, found missing"),
    ("{not json", "config.json is not valid JSON"),
])
def test_a_damaged_tiny_gpt_folder_is_named_before_it_is_loaded(tmp_path, config_json, message):
    folder = tmp_path / "gpt"
    folder.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (folder / name).write_bytes(b"x")
    (folder / "config.json").write_text(config_json)
    with pytest.raises(ValueError, match=message):
        NLGConfig(model=str(folder))
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="is not a tiny GPT checkpoint: it has no tokenizer.json"):
        NLGConfig(model=str(folder))


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps must be an integer >= 1, got 0"),
    (["--lr", "nan"], "--lr must be a number > 0, got nan"),
    (["--lr", "0"], "--lr must be a number > 0, got 0.0"),
    (["--lr", "-1"], "--lr must be a number > 0, got -1.0"),
    (["--seed", "-3"], "--seed must be an integer >= 0, got -3"),
    (["--e2e-texts", "-1"], "--e2e-texts must be an integer >= 0, got -1"),
    (["--e2e-descriptions", "9"], r"--e2e-descriptions must be an integer in \[1, 5\], got 9"),
    (["--e2e-share", "1.5"], r"--e2e-share must be a number in \[0, 1\], got 1.5"),
])
def test_every_pretrain_gpt_flag_is_checked(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        cli.run(["pretrain-gpt"] + flags + ["--out", str(tmp_path / "gpt")])
    assert not (tmp_path / "gpt").exists()
