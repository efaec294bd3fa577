"""AdapterHub's bottleneck-adapter folder: a tinymix adapter (placement ffn, houlsby or pfeiffer) or
AdaMix-adapter (merged first) on MiniLM goes out as the files AdapterHub's `model.load_adapter(folder,
use_safetensors=True)` reads onto transformers' BertModel. The way back is adapterhub_import.py.

    export_adapterhub("runs/aa/merged", "runs/aa/adapterhub")  # python3 -m tinymix export ... --format adapterhub

The format (the `adapters` package, checked against its version 1.3.0):
    adapter_config.json    {"config": BnConfig's fields, "name", "model_type": "bert", "hidden_size",
                            "model_class", "model_name", "version": "adapters.X.Y.Z"}
    adapter.safetensors    encoder.layer.{N}.output.adapters.{name}.adapter_down.0.weight  (r, d)
                           encoder.layer.{N}.output.adapters.{name}.adapter_down.0.bias    (r,)
                           encoder.layer.{N}.output.adapters.{name}.adapter_up.weight      (d, r)
                           encoder.layer.{N}.output.adapters.{name}.adapter_up.bias        (d,)
                           (and encoder.layer.{N}.attention.output.adapters.{name}... for houlsby)
AdapterHub also reads pytorch_adapter.bin, a pickle; this export never writes one. It writes
adapter.safetensors, which AdapterHub reads only when asked: load_adapter(..., use_safetensors=True).

Where the adapter sits. In AdapterHub's BertSelfOutput and BertOutput a sublayer's output s (after its
dense layer and dropout) and the sublayer's input x go to the adapter layer, which computes, with its
bottleneck a(z) = up(act(down(z))) * scaling:
    pre:   residual = s                        if residual_before_ln is True
           s = LN(s + x)                       if original_ln_before (residual = s + x first, if "post_add")
           residual = s                        if residual_before_ln is False
    mid:   out = a(s) + residual               (ln_after, gating, parallel: all off here)
    post:  out = LN(out + x)                   if original_ln_after
tinymix's Block (transformer.py) computes, at inference (dropout off):
    ffn / houlsby's second   x' = LN(x + (h + a(h)))     h the FFN's output, a on it before the residual
    houlsby's first          the same on the attention's output
    pfeiffer                 y = z + a(z),  z = LN(x + h): the block's output, no LayerNorm after it
so each placement is one BnConfig (PLACEMENTS below), term for term: ffn and houlsby are AdapterHub's
defaults (original_ln_before False, original_ln_after True), houlsby with mh_adapter too; tinymix's
pfeiffer is original_ln_before True, residual_before_ln False, original_ln_after False. (AdapterHub's
own Pfeiffer config, seq_bn, is another function: LN(a(LN(x + h)) + h + x), a LayerNorm after the adapter.)
Activation "gelu" is transformers' exact-erf GELU, tinymix's F.gelu; the "version" field must be present,
or AdapterHub reads "gelu" as the old name of the tanh approximation (gelu_new). AdapterHub's down size is
int(hidden // reduction_factor): reduction_factor is the float that gives back exactly the bottleneck.
The one difference is in training only: AdapterHub puts the sublayer's dropout before the adapter,
tinymix after it; at inference dropout is off and both compute the same function.
"""
import math
from pathlib import Path

from ..store import checkpoint
from .peft_export import (CONFIG_FILE, HEAD_FILE, MINILM_NAME, _check_destination, check_minilm, load_deployed,
                          read_tinymix_adapter)

WEIGHTS_FILE, PICKLE_FILE = "adapter.safetensors", "pytorch_adapter.bin"
NAME = "tinymix"                        # the adapter's name inside the model (load_as= renames it)
VERSION = "adapters.1.3.0"              # the format these files follow (and the version they were checked with)
# tinymix's adapter slot in a Block -> the BertModel module AdapterHub puts that adapter in
SITES = {"attention_adapter": "attention.output", "ffn_adapter": "output", "output_adapter": "output"}
SLOTS = {"ffn": ("ffn_adapter",), "houlsby": ("attention_adapter", "ffn_adapter"), "pfeiffer": ("output_adapter",)}
# each tinymix placement as BnConfig's placement fields (module docstring: why each is exact)
PLACEMENTS = {
    "ffn": {"mh_adapter": False, "output_adapter": True, "original_ln_before": False, "original_ln_after": True,
            "residual_before_ln": True},
    "houlsby": {"mh_adapter": True, "output_adapter": True, "original_ln_before": False, "original_ln_after": True,
                "residual_before_ln": True},
    "pfeiffer": {"mh_adapter": False, "output_adapter": True, "original_ln_before": True, "original_ln_after": False,
                 "residual_before_ln": False},
}
# BnConfig's other fields, each at the value that makes the layer tinymix's plain bottleneck: no LayerNorm
# of its own, no gate, no scaling, not parallel, plain Linear layers (no PHM), in every layer, no dropout
# inside the adapter (tinymix's has none); init_weights "bert" is tinymix's Linear init, N(0, 0.02), bias 0
PLAIN = {"adapter_residual_before_ln": False, "cross_adapter": False, "dropout": 0.0, "factorized_phm_W": True,
         "factorized_phm_rule": False, "hypercomplex_nonlinearity": "glorot-uniform", "init_weights": "bert",
         "init_weights_seed": None, "inv_adapter": None, "inv_adapter_reduction_factor": None, "is_parallel": False,
         "learn_phm": True, "leave_out": [], "ln_after": False, "ln_before": False, "non_linearity": "gelu",
         "phm_bias": True, "phm_c_init": "normal", "phm_dim": 4, "phm_init_range": 0.0001, "phm_layer": False,
         "phm_rank": 1, "scaling": 1.0, "shared_W_phm": False, "shared_phm_rule": True, "stochastic_depth": 0.0,
         "use_gating": False}


def reduction_factor(hidden, bottleneck):
    """The reduction factor AdapterHub turns back into this bottleneck: it sizes the down-projection
    int(hidden // reduction_factor), so hidden / bottleneck itself can fall one short (384 / 13)."""
    factor = hidden / bottleneck
    for _ in range(64):
        got = int(hidden // factor)
        if got == bottleneck:
            return int(factor) if factor.is_integer() else factor
        factor = math.nextafter(factor, 0.0 if got < bottleneck else math.inf)
    raise ValueError(f"no reduction factor gives a bottleneck of {bottleneck} for hidden size {hidden}")


def down_size(hidden, factor):
    """AdapterHub's own rule for the size of the down-projection (Adapter's down_sample, at least 1)."""
    return max(int(hidden // factor), 1)


def weight_names(name, placement, num_layers, prefix=""):
    """{(layer, tinymix slot, tinymix weight): AdapterHub key} for one adapter's weights."""
    ends = {"down.weight": "adapter_down.0.weight", "down.bias": "adapter_down.0.bias",
            "up.weight": "adapter_up.weight", "up.bias": "adapter_up.bias"}
    return {(i, slot, ours): f"{prefix}encoder.layer.{i}.{SITES[slot]}.adapters.{name}.{theirs}"
            for i in range(num_layers) for slot in SLOTS[placement] for ours, theirs in ends.items()}


def bn_config(bottleneck, placement, hidden):
    """The full BnConfig dict (every field written out, as AdapterHub's save_adapter writes it)."""
    return {**PLAIN, **PLACEMENTS[placement], "reduction_factor": reduction_factor(hidden, bottleneck)}


def _exportable_adapter(config, folder):
    """The AdapterConfig inside a tinymix config, or a clear refusal of what is no bottleneck adapter."""
    if config.method == "adapter" or (config.method == "adamix" and config.module == "adapter"):
        return config if config.method == "adapter" else config.adapter
    if config.method == "lora" or config.method == "adamix":
        raise ValueError(f"{folder} holds a LoRA (a low-rank update B A of existing weights), not a bottleneck "
                         "adapter: --format adapterhub writes AdapterHub's bottleneck adapters. Export it with "
                         "--format peft (Hugging Face PEFT's LoRA format)")
    if config.method in ("bitfit", "full"):
        what = "BitFit: the base model's own biases, retrained" if config.method == "bitfit" else (
            "full fine-tuning: every weight of the base model changed")
        raise ValueError(f"{folder} holds {what}, and no adapter. AdapterHub's adapter folder holds only the "
                         "adapter's own weights on top of an unchanged base model, so it cannot hold this: "
                         "export the model whole with --format transformers")
    raise ValueError(f"{folder} holds {config.method}, which has no AdapterHub bottleneck-adapter form: "
                     "--format adapterhub exports adapters (train --method adapter, with --placement ffn, "
                     "houlsby or pfeiffer) and AdaMix-adapters (adamix)")


def export_adapterhub(adapter_folder, out_folder, say=print):
    """Write a saved tinymix adapter / AdaMix-adapter on MiniLM as an AdapterHub adapter folder (plus
    head.safetensors and README.md). Returns {file name: size in bytes}."""
    folder, out = Path(adapter_folder), Path(out_folder)
    saved, config = read_tinymix_adapter(folder)
    adapter = _exportable_adapter(config, folder)
    if getattr(adapter, "linear", False):
        raise ValueError(f"{folder} holds a linear adapter (LiST's: no nonlinearity between its projections); "
                         "AdapterHub's bottleneck adapters apply one (relu, gelu, ...), so this export would "
                         "compute another function: it is refused")
    base = check_minilm(saved, folder, "AdapterHub")
    _check_destination(out, folder)

    model, transformer, num_labels = load_deployed(folder, saved, base, say, "AdaMix-adapter",
                                                   lambda c: f"sharing {c.sharing!r}", "adapter per site")
    arrays = {}
    for (i, slot, ours), key in weight_names(NAME, adapter.placement, base.num_layers).items():
        layer = getattr(getattr(transformer.layers[i], slot), ours.split(".")[0])
        arrays[key] = getattr(layer, ours.split(".")[1]).data
    hub_config = {"config": bn_config(adapter.bottleneck, adapter.placement, base.hidden_size),
                  "hidden_size": base.hidden_size, "model_class": "BertModel", "model_name": MINILM_NAME,
                  "model_type": "bert", "name": NAME, "version": VERSION}
    checkpoint.save_arrays(out / WEIGHTS_FILE, arrays, metadata={"format": "pt"})
    checkpoint.save_json(out / CONFIG_FILE, hub_config)
    if num_labels:
        checkpoint.save_arrays(out / HEAD_FILE, {"classifier.weight": model.classifier.weight.data,
                                                 "classifier.bias": model.classifier.bias.data})
    (out / "README.md").write_text(_readme(folder, config, adapter, hub_config, num_labels, base.hidden_size))
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.name in
             (CONFIG_FILE, WEIGHTS_FILE, HEAD_FILE, "README.md")}
    say(f"wrote an AdapterHub bottleneck adapter {NAME!r} for {MINILM_NAME} to {out}: {len(arrays)} tensors "
        f"(placement {adapter.placement}, bottleneck {adapter.bottleneck}, reduction_factor "
        f"{hub_config['config']['reduction_factor']}, non_linearity gelu)")
    for name, size in sizes.items():
        say(f"  {name:<27} {size:>9,d} bytes")
    say(f"load it with: adapters.init(model); model.load_adapter({str(out)!r}, use_safetensors=True, "
        "set_active=True)" + ("; the head is in head.safetensors (README.md says how to apply it)" if num_labels else ""))
    return sizes


def _readme(folder, config, adapter, hub_config, num_labels, hidden):
    placement = {
        "ffn": "after the feed-forward sublayer of every layer (AdaMix's placement): on the FFN's output h, "
               "h + up(gelu(down(h))), before the residual add and LayerNorm",
        "houlsby": "after both sublayers of every layer (Houlsby et al.): on the attention's output and on the "
                   "FFN's output, h + up(gelu(down(h))), each before its residual add and LayerNorm",
        "pfeiffer": "on the output of every layer, after its last LayerNorm: y + up(gelu(down(y))), no LayerNorm "
                    "after it (AdapterHub's own Pfeiffer config, seq_bn, is another function)",
    }[adapter.placement]
    fields = ", ".join(f"{k}={hub_config['config'][k]!r}".replace("True", "true").replace("False", "false")
                       for k in (*PLACEMENTS[adapter.placement], "reduction_factor", "non_linearity"))
    text = f"""# A bottleneck adapter for {MINILM_NAME}, exported by tinymix

Made by `python3 -m tinymix export --format adapterhub` from `{folder}` (tinymix method
{"adamix-adapter" if config.method == "adamix" else "adapter"!r}, placement {adapter.placement!r}). It is an
AdapterHub bottleneck adapter named {hub_config['name']!r} (`adapter_config.json`, `adapter.safetensors`) for
transformers' `BertModel` with the all-MiniLM-L6-v2 weights, with a bottleneck of {adapter.bottleneck}, placed
{placement}.

In AdapterHub's terms: {fields}; no LayerNorm, gate or scaling of its own.

    import adapters
    from transformers import BertModel
    model = BertModel.from_pretrained("{MINILM_NAME}")
    adapters.init(model)
    name = model.load_adapter("path/to/this/folder", use_safetensors=True, set_active=True)

The weights are in safetensors only (no pickle file): without `use_safetensors=True` AdapterHub looks for
`pytorch_adapter.bin` and does not find it. `load_as="..."` loads it under another name.
"""
    if config.method == "adamix":
        text += f"""
It was trained as an AdaMix-adapter ({config.num_experts} experts, sharing {config.sharing!r}) and merged:
each mixture of down- or up-projections became the mean of its experts, as tinymix deploys it (its
"average" inference computes exactly this adapter).
"""
    if num_labels:
        text += f"""
## head.safetensors: the classifier trained with it (not part of the AdapterHub files)

`classifier.weight` ({num_labels}, {hidden}) and `classifier.bias` ({num_labels},), float32. Apply it to the
BertModel's last hidden states h (batch, tokens, {hidden}) with the attention mask m (1 for a real
token, 0 for padding):

    pooled[b] = sum_t m[b, t] h[b, t] / max(sum_t m[b, t], 1)     # the mean over non-pad tokens
    logits[b] = classifier.weight @ pooled[b] + classifier.bias   # {num_labels} classes

AdapterHub's classification heads pool the first token, so this head is not written as one of them.
On tinymix's movie reviews class 1 is positive, class 0 negative.
"""
    return text
