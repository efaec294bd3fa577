"""FT-Top2: only the top k layers (with a decoder's final LayerNorm) and the head train; counts."""
import pytest

import tinymix
from tinymix import functional as F
from tinymix.neighbours import ft_top
from tinymix.transformer import LanguageModel, Transformer, TransformerConfig

from neighbours_models import minilm_shaped, tiny_batch, tiny_classifier

pytestmark = pytest.mark.numerics


def tiny_gpt_shaped():
    tinymix.manual_seed(0)
    return LanguageModel(Transformer(TransformerConfig(kind="decoder", vocab_size=2048, hidden_size=128, num_layers=4,
                                                       num_heads=4, intermediate_size=512, max_positions=64)))


@pytest.mark.parametrize("k", [1, 2])
def test_a_backward_pass_reaches_only_the_top_layers_and_the_head(k):
    model = ft_top.inject(tiny_classifier(), ft_top.FTTopConfig(num_layers=k))
    ids, mask = tiny_batch()
    F.cross_entropy(model(ids, mask), [0, 1, 0, 1]).backward()
    with_grad = {name.split(".")[2] if name.startswith("transformer.layers.") else name.split(".")[0]
                 for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {str(i) for i in range(2 - k, 2)} | {"classifier"}


def test_counts_on_minilms_and_the_tiny_gpts_shapes_match_the_closed_form():
    d, f = 384, 1536
    layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
    assert ft_top.count(ft_top.inject(minilm_shaped(), ft_top.FTTopConfig())) == (2 * layer + 2 * d + 2,) * 2 == (3_549_698,) * 2
    d, f = 128, 512
    layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
    assert ft_top.count(ft_top.inject(tiny_gpt_shaped(), ft_top.FTTopConfig())) == (2 * layer + 2 * d,) * 2 == (396_800,) * 2
    tied = ft_top.inject(tiny_gpt_shaped(), ft_top.FTTopConfig(train_embeddings=True))
    assert ft_top.count(tied)[0] == 396_800 + 2048 * 128


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="num_layers must be between 1 and the model's 2 layers, got 3"):
        ft_top.inject(tiny_classifier(), ft_top.FTTopConfig(num_layers=3))
    model = ft_top.inject(tiny_classifier(), ft_top.FTTopConfig())
    with pytest.raises(RuntimeError, match="already has ft_top modules"):
        ft_top.inject(model, ft_top.FTTopConfig())
