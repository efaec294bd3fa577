"""LiST's self-training (tinymix/selftrain.py): the re-weighting by hand, and a run end to end."""
import json

import numpy as np
import pytest

from tinymix import cli, selftrain
from tinymix.backend import xp
from tinymix.train import TrainConfig


def test_an_example_against_the_labelled_gradient_gets_no_weight_and_the_rest_sum_to_one():
    reference = [xp.asarray([1.0, 0.0]), xp.asarray([2.0])]
    along = [xp.asarray([1.0, 5.0]), xp.asarray([1.0])]           # <r, g> = 1 + 2 = 3
    against = [xp.asarray([-1.0, 0.0]), xp.asarray([-1.0])]       # -3: weight 0
    twice = [xp.asarray([2.0, 0.0]), xp.asarray([2.0])]           # 6
    assert np.allclose(selftrain.reweight(reference, [along, against, twice]), [1 / 3, 0.0, 2 / 3])
    assert selftrain.reweight(reference, [against]) is None


def test_self_training_runs_its_sessions_on_the_sentences_train_size_left_out(tmp_path, capsys):
    cli.main(["train", "--method", "adapter", "--model", "random-tiny", "--epochs", "1", "--train-size", "30",
              "--train-sample", "0", "--no-select-on-validation", "--batch-size", "4", "--self-training", "2",
              "--self-training-steps", "3", "--unlabelled-batch", "4", "--out", str(tmp_path / "run")])
    history = json.loads((tmp_path / "run" / "results.json").read_text())["self_training"]
    assert [h["session"] for h in history] == [1, 2] and all(h["examples"] == 12 for h in history)
    assert all(0 <= h["teacher_agreement"] <= 1 for h in history)
    assert "self-training session 2" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--self-training learns from the training sentences left out"):
        TrainConfig(method="adapter", self_training=2).validate()


def test_lists_adapter_is_linear_after_attention_and_ffn_and_drawn_from_n_0_002():
    from tinymix import backend, methods, peft
    from tinymix.tensor import Tensor
    from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig
    backend.manual_seed(0)
    config = TransformerConfig(vocab_size=30, hidden_size=256, num_layers=2, num_heads=4, intermediate_size=512,
                               max_positions=16)
    model = peft.get_peft_model(SequenceClassifier(Transformer(config), 2),
                                methods.peft_config(TrainConfig(method="list-adapter"), 10))
    adapters = [m for _, m in model.named_modules() if isinstance(m, peft.Adapter)]
    assert len(adapters) == 4 and all(a.linear for a in adapters)             # two per layer
    weights = np.concatenate([backend.to_numpy(a.down.weight.data).ravel() for a in adapters])
    assert abs(weights.std() - 0.02) < 0.002 and adapters[0].down.weight.shape == (128, 256)
    h = Tensor(xp.asarray(np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)))
    a = adapters[0]
    expected = h.data + a.up(a.down(h)).data
    assert np.allclose(backend.to_numpy(a(h).data), backend.to_numpy(expected), atol=1e-5)   # no GELU between


def test_lists_adapter_trains_on_minilm_and_deploys_all_it_trains(tmp_path):
    from tinymix import data
    from tinymix.train import train
    movies = data.load_movie_reviews()
    small = {"train": data.Split(movies["train"].texts[:16], movies["train"].labels[:16]),
             "validation": data.Split(movies["validation"].texts[:8], movies["validation"].labels[:8]),
             "test": data.Split(movies["test"].texts[:8], movies["test"].labels[:8])}
    result = train(TrainConfig(method="list-adapter", epochs=1, batch_size=8, progress=False), small)
    assert np.isfinite(result["losses"]).all()
    per_site = 128 * 384 + 128 + 384 * 128 + 384                    # down and up, with their biases
    assert result["trainable_parameters"] == 6 * 2 * per_site + 384 * 2 + 2 == result["merged_parameters"]
