"""The Hadamard adapter and AdaMix over it: identity at the start, gradients, exact merging into the
attention output projection (both positions, single and mixture), counts on MiniLM's shape."""
import numpy as np
import pytest

from tinymix import adamix, backend
from tinymix.gradient_check import gradcheck
from tinymix.neighbours import hadamard
from tinymix.tensor import Tensor, no_grad

from neighbours_models import logits, minilm_shaped, tiny_batch, tiny_classifier

pytestmark = pytest.mark.numerics


def tiny_pretrained(seed=0):
    """A base whose attention output projections have biases (a fresh Linear's are 0), so that
    folding the adapter's scale into b_O shows."""
    model = tiny_classifier(seed)
    for block in model.transformer.layers:
        block.attention.output.bias.data = backend.host_normal(block.attention.output.bias.shape, 0.5)
    return model


def trained_like(config):
    """Adapters moved away from (1, 0), each expert its own way."""
    model = hadamard.inject(tiny_pretrained(), config)
    for module in (m for _, m in model.named_modules() if isinstance(m, hadamard.Hadamard)):
        module.scale.data = 1 + backend.host_normal(module.scale.shape, 0.5)
        module.bias.data = backend.host_normal(module.bias.shape, 0.5)
    return model.eval()


CONFIGS = [hadamard.HadamardConfig(position=p, num_experts=m) for p in hadamard.POSITIONS for m in (1, 3)]


def test_gradients_of_the_adapter_and_of_its_averaged_mixture_match_central_differences(backend_name):
    single = hadamard.Hadamard(4)
    x, scale, bias = (Tensor(backend.host_normal(s, 0.8), requires_grad=True) for s in ((2, 3, 4), (4,), (4,)))

    def forward(x, scale, bias):
        single.scale, single.bias = scale, bias
        return single(x)
    assert gradcheck(forward, x, scale, bias)

    mixture = adamix.make_mixture(lambda: hadamard.Hadamard(4), 2, "identical").eval()
    s0, s1 = (Tensor(backend.host_normal((4,), 0.8), requires_grad=True) for _ in range(2))

    def averaged(x, s0, s1):
        mixture.experts[0].scale, mixture.experts[1].scale = s0, s1
        for e in mixture.experts:
            e.bias = Tensor(e.bias.data.astype("float64"))
        return mixture(x)
    assert gradcheck(averaged, x, s0, s1)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.position}-{c.num_experts}")
def test_the_adapter_starts_as_the_identity(config):
    ids, mask = tiny_batch()
    base = logits(tiny_pretrained().eval(), ids, mask)
    model = hadamard.inject(tiny_pretrained(), config).eval()
    np.testing.assert_allclose(logits(model, ids, mask), base, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.position}-{c.num_experts}")
def test_merging_into_the_output_projection_is_exact_and_unmerging_restores_everything(config, backend_name):
    ids, mask = tiny_batch()
    model = trained_like(config)
    before = logits(model, ids, mask)
    projection = model.transformer.layers[0].attention.output
    projection = getattr(projection, "base", projection)
    weight = backend.to_numpy(projection.weight.data).copy()
    hadamard.merge(model)
    assert not any(isinstance(m, (hadamard.Hadamard, adamix.Mixture)) for _, m in model.named_modules())
    np.testing.assert_allclose(logits(model, ids, mask), before, rtol=1e-4, atol=1e-5)
    assert not np.allclose(backend.to_numpy(projection.weight.data), weight)
    hadamard.unmerge(model)
    assert np.array_equal(backend.to_numpy(projection.weight.data), weight)
    np.testing.assert_allclose(logits(model, ids, mask), before, rtol=1e-6, atol=1e-7)


def test_the_average_of_hadamard_experts_is_exactly_the_mean_of_their_outputs(backend_name):
    ids, mask = tiny_batch()
    model = trained_like(hadamard.HadamardConfig(position="output", num_experts=3))
    averaged = logits(model, ids, mask)
    each = []
    for k in range(3):
        adamix.set_inference_mode(model, "fixed", k)
        each.append(logits(model, ids, mask))
    adamix.set_inference_mode(model, "average")
    mixture = model.transformer.layers[0].attention_adapter
    x = Tensor(backend.host_normal((2, 5, 32), 1.0))
    with no_grad():
        outputs = [e(x).numpy() for e in mixture.experts]
        np.testing.assert_allclose(mixture(x).numpy(), np.mean(outputs, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(averaged, each[0], atol=1e-4)      # the experts differ, the average is their mean
    hadamard.merge(model)
    np.testing.assert_allclose(logits(model, ids, mask), averaged, rtol=1e-4, atol=1e-5)


def test_training_routes_one_expert_per_call_and_trains_only_adapters_layer_norms_and_head():
    model = hadamard.inject(tiny_classifier(), hadamard.HadamardConfig(num_experts=4))
    ids, mask = tiny_batch()
    for _ in range(6):
        model(ids, mask)
    mixture = model.transformer.layers[1].attention.output.adapter
    assert sum(mixture.route_counts) == 6
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n or ".attention_norm." in n or n.startswith("classifier.")
                             for n in trainable)
    assert not any(".output_norm." in n for n in trainable)     # only the LayerNorm after the adapter
    frozen_norms = hadamard.inject(tiny_classifier(), hadamard.HadamardConfig(train_layer_norm=False))
    assert not any("norm" in n for n, p in frozen_norms.named_parameters() if p.requires_grad)


def test_counts_on_minilms_shape_match_the_closed_form():
    d, L, head = 384, 6, 384 * 2 + 2
    single = L * 2 * d + L * 2 * d + head                         # adapters, attention LayerNorms, head
    assert hadamard.count(hadamard.inject(minilm_shaped(), hadamard.HadamardConfig())) == (single, single) == (9_986, 9_986)
    mixed = hadamard.inject(minilm_shaped(), hadamard.HadamardConfig(num_experts=4))
    assert hadamard.count(mixed) == (L * 4 * 2 * d + L * 2 * d + head, single) == (23_810, 9_986)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="unknown position 'ffn'"):
        hadamard.inject(tiny_classifier(), hadamard.HadamardConfig(position="ffn"))
    with pytest.raises(ValueError, match="num_experts must be at least 1"):
        hadamard.inject(tiny_classifier(), hadamard.HadamardConfig(num_experts=0))
    model = trained_like(hadamard.HadamardConfig(num_experts=2))
    adamix.set_inference_mode(model, "random")
    with pytest.raises(ValueError, match="'random' inference mode"):
        hadamard.merge(model)
    with pytest.raises(RuntimeError, match="already has hadamard modules"):
        hadamard.inject(model, hadamard.HadamardConfig())
