"""MUSCLE's masked distillation (experiments/porting.compatibility_loss), by hand."""
import numpy as np

from tinymix import backend
from tinymix.backend import xp
from tinymix.e2e import finetune
from tinymix.experiments import porting
from tinymix.tensor import Tensor
from tinymix.transformer import LanguageModel, Transformer, TransformerConfig


def tiny(seed):
    backend.manual_seed(seed)
    config = TransformerConfig(kind="decoder", vocab_size=11, hidden_size=8, num_layers=1, num_heads=2,
                               intermediate_size=16, max_positions=8, dropout=0.0)
    model = LanguageModel(Transformer(config))
    model.eval()
    return model


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_the_teacher_is_the_old_model_where_it_is_right_and_the_new_one_elsewhere():
    old, new = tiny(1), tiny(2)
    inputs = np.array([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
    targets = np.full((2, 6), finetune.IGNORE)
    old_logits = backend.to_numpy(finetune.target_logits(old, inputs, np.where(np.ones((2, 6)), 0, 0)).data)
    greedy = old_logits.reshape(2, 6, -1).argmax(axis=-1)
    targets[:, 3:] = [[greedy[0, 3], 7, greedy[0, 5]], [1, greedy[1, 4], 9]]      # old right on some tokens only
    picked = targets[targets != finetune.IGNORE]
    o = backend.to_numpy(finetune.target_logits(old, inputs, targets).data)
    n = backend.to_numpy(finetune.target_logits(new, inputs, targets).data)
    right = o.argmax(axis=-1) == picked
    assert 0 < right.sum() < len(picked)                                          # both teachers are used
    p = softmax(np.where(right[:, None], o, n))
    student = np.random.default_rng(0).standard_normal(o.shape).astype(np.float32)
    q = softmax(student)
    expected = 2.0 * (p * (np.log(p) - np.log(q))).sum(axis=-1).mean()          # weight 2 x mean KL(p || q)
    logits = Tensor(xp.asarray(student), requires_grad=True)
    loss = porting.compatibility_loss(old, new, weight=2.0)(inputs, targets, picked)(logits)
    assert abs(loss.item() - expected) < 1e-5
    loss.backward()
    assert np.allclose(backend.to_numpy(logits.grad), 2.0 * (q - p) / len(p), atol=1e-6)
