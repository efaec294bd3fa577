"""The neighbours as `--method` values: each trains end to end through `train` on the tiny random
encoder, its hooks run, its counts are reported, and its saved merged adapter loads back into a fresh
model with the same outputs."""
import dataclasses

import numpy as np
import pytest

from tinymix import backend, methods, peft
from tinymix.cli.helptext import field_help
from tinymix.neighbours import loretta, phm
from tinymix.pretrained import load_pretrained
from tinymix.tensor import no_grad
from tinymix.train import train
from tinymix.transformer import SequenceClassifier
from test_train import tiny_config, tiny_splits

pytestmark = pytest.mark.numerics

NEIGHBOURS = ("adalora", "phm", "mixphm", "hadamard", "loretta-rep", "loretta-adp", "prefix", "ft-top2",
              "unipelt", "unipelt-ap")
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
    texts = splits["test"].texts[:8]
    backend.manual_seed(0)             # train's seed before it builds the model: the same frozen base
    fresh = SequenceClassifier(load_pretrained("random-tiny", max_length=64)[0], 2)
    loaded = peft.load_adapter(fresh, tmp_path / "run" / "merged")
    np.testing.assert_allclose(logits(loaded, result["tokenizer"], texts),
                               logits(result["model"], result["tokenizer"], texts), rtol=1e-4, atol=1e-5)

