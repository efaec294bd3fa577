"""Model Surgery (tinymix/surgery.py): the probe, the choice of rows, the edit and its undo."""
import numpy as np
import pytest

from tinymix import backend, surgery
from tinymix.backend import xp
from tinymix.transformer import LanguageModel, Transformer, TransformerConfig


def tiny_gpt():
    backend.manual_seed(0)
    config = TransformerConfig(kind="decoder", vocab_size=50, hidden_size=16, num_layers=3, num_heads=2,
                               intermediate_size=32, max_positions=16, dropout=0.0)
    return LanguageModel(Transformer(config))


def test_the_probe_finds_a_separating_direction():
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(8).astype(np.float32)
    states = rng.standard_normal((200, 8)).astype(np.float32)
    labels = (states @ direction > 0).astype(int)
    probe = surgery.train_probe(xp.asarray(states), labels.tolist(), seed=0, steps=300, lr=5e-2)
    assert probe["accuracy"] > 0.95
    v = backend.to_numpy(probe["direction"])
    assert v @ direction / (np.linalg.norm(v) * np.linalg.norm(direction)) > 0.5      # class 1's side
    with pytest.raises(ValueError, match="both classes"):
        surgery.train_probe(xp.asarray(states), [1] * 200)


def test_rows_most_opposed_to_the_direction_come_first_over_all_layers():
    model = tiny_gpt()
    v = xp.asarray(np.random.default_rng(1).standard_normal(16).astype(np.float32))
    model.transformer.layers[2].intermediate.weight.data[5] = -3 * v          # exactly opposed: cosine -1
    model.transformer.layers[0].intermediate.weight.data[7] = -0.5 * v + 0.01
    rows = surgery.select_rows(model, v, count=2)
    assert rows[0] == (2, 5) and rows[1] == (0, 7)
    assert len(surgery.select_rows(model, v)) == round(surgery.SHARE * 3 * 32)
    with pytest.raises(ValueError, match="choose between 1"):
        surgery.select_rows(model, v, count=0)


def test_the_edit_adds_alpha_v_to_the_chosen_rows_only_and_is_undone_bit_for_bit():
    model = tiny_gpt()
    v = xp.asarray(np.random.default_rng(2).standard_normal(16).astype(np.float32))
    rows = [(0, 3), (2, 9)]
    before = {k: backend.to_numpy(p).copy() for k, p in model.transformer.state_dict().items()}
    alpha = surgery.alpha_for(model, rows, v, r=2.0)
    norms = [np.linalg.norm(before[f"layers.{l}.intermediate.weight"][r]) for l, r in rows]
    assert alpha * np.linalg.norm(backend.to_numpy(v)) == pytest.approx(2.0 * np.mean(norms), rel=1e-5)
    with surgery.operated(model, rows, alpha * v):
        inside = {k: backend.to_numpy(p) for k, p in model.transformer.state_dict().items()}
        changed = [k for k in before if not np.array_equal(before[k], inside[k])]
        assert changed == ["layers.0.intermediate.weight", "layers.2.intermediate.weight"]
        delta = inside["layers.2.intermediate.weight"] - before["layers.2.intermediate.weight"]
        assert np.allclose(delta[9], alpha * backend.to_numpy(v), atol=1e-5) and not delta[:9].any()
    after = {k: backend.to_numpy(p) for k, p in model.transformer.state_dict().items()}
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_pooled_states_ignore_padding():
    from tinymix.pretrained import load_gpt
    backbone, tokenizer = load_gpt()
    alone = surgery.pooled_states(backbone, tokenizer, ["The Eagle is a pub."])
    padded = surgery.pooled_states(backbone, tokenizer, ["The Eagle is a pub.", "A much longer text about a restaurant "
                                                          "by the river with a high customer rating."])
    assert np.allclose(backend.to_numpy(alone[0]), backend.to_numpy(padded[0]), atol=1e-5)
