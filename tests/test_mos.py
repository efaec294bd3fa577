"""MOS (tinymix/mos.py): the merge after every step, the class Gaussians, the forgetting baseline."""
import numpy as np
import pytest

from tinymix import backend, mos, peft
from tinymix.backend import xp
from tinymix.pretrained import load_pretrained
from tinymix.transformer import SequenceClassifier

TEXTS = ["a fine film", "a dull film", "great acting", "awful plot", "loved it", "hated it"] * 2


def learner(**settings):
    backend.manual_seed(0)
    backbone, tokenizer = load_pretrained("random-tiny", max_length=16)
    model = peft.get_peft_model(SequenceClassifier(backbone, 4), peft.AdapterConfig(bottleneck=4))
    return mos.Learner(model, tokenizer, epochs=1, batch_size=4, **settings)


def test_merge_step_mixes_in_the_earlier_adapters_mean():
    p = peft.Parameter(xp.asarray([1.0, 2.0], dtype=xp.float32))
    mos.merge_step([("w", p)], {"w": xp.asarray([3.0, 0.0], dtype=xp.float32)}, 0.1)
    assert np.allclose(backend.to_numpy(p.data), [0.9 * 1 + 0.3, 0.9 * 2])


def test_every_step_of_a_later_task_is_merged_and_the_first_task_never(monkeypatch):
    calls = []
    original = mos.merge_step
    monkeypatch.setattr(mos, "merge_step", lambda params, earlier, m: (calls.append(m), original(params, earlier, m)))
    found = learner()
    found.learn(TEXTS, [1, 0] * 6)
    assert calls == []
    found.learn(TEXTS, [3, 2] * 6)
    assert calls == [0.1] * 3                                   # 12 sentences, batches of 4, one epoch
    assert len(found.adapters) == 2 and found.task_of == {0: 0, 1: 0, 2: 1, 3: 1}
    none = learner(merge=0.0)
    none.learn(TEXTS, [1, 0] * 6)
    calls.clear()
    none.learn(TEXTS, [3, 2] * 6)
    assert calls == []


def test_the_class_gaussian_is_the_shrunk_covariance():
    rows = xp.asarray(np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32))
    mean, factor = mos.gaussian(rows)
    cov = np.cov(backend.to_numpy(rows), rowvar=False)
    shrunk = 0.9 * cov + 0.1 * np.trace(cov) / 6 * np.eye(6)
    assert np.allclose(backend.to_numpy(factor @ factor.T), shrunk, atol=1e-4)
    assert np.allclose(backend.to_numpy(mean), backend.to_numpy(rows).mean(axis=0), atol=1e-6)


def test_the_sequential_baseline_carries_one_adapter_through_the_tasks():
    found = learner(sequential=True)
    found.learn(TEXTS, [1, 0] * 6)
    first = {k: v.copy() for k, v in found.adapters[0].items()}
    found.use(0)
    found.learn(TEXTS, [3, 2] * 6)
    start_of_second = found.adapters[1]
    assert found.merge == 0.0 and not found.align and not found.refine
    assert any(not np.array_equal(backend.to_numpy(first[k]), backend.to_numpy(start_of_second[k])) for k in first)
    predicted, retrieved = found.predict(TEXTS[:3])
    assert retrieved == [1, 1, 1] and set(predicted) <= {0, 1, 2, 3}
