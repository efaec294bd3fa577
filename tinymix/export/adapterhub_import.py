"""An AdapterHub bottleneck adapter for all-MiniLM-L6-v2's BertModel, into tinymix: checked whole, then loaded.

    import_adapterhub("some/adapter", "runs/imported")   # python3 -m tinymix import-adapterhub some/adapter --out ...
    load_into(model, "some/adapter")                    # the same checks, straight into a tinymix model

Everything is checked before any weight is read: adapter_config.json (another base model, a placement
tinymix has no form of, any BnConfig option that changes what the adapter computes: its own LayerNorms,
gates, scaling, PHM layers, another activation, layers left out, ...), and the safetensors header (every
expected key present, no other, each shape and dtype). Only then are the arrays read. The format, and why
each of tinymix's placements is exactly one BnConfig, are in adapterhub_export.py.
"""
from pathlib import Path

from .. import peft
from ..backend import from_numpy
from ..store import checkpoint
from .adapterhub_export import PICKLE_FILE, PLACEMENTS, PLAIN, WEIGHTS_FILE, down_size, weight_names
from .peft_export import CONFIG_FILE, HEAD_FILE, MINILM_NAME, _check_destination, _skeleton, minilm_config
from .peft_import import _check_tensors, _header, _read_float32, with_head

# BnConfig fields accepted at any value, as they do not change what a trained adapter computes at inference:
# dropout and stochastic_depth act in training only, init_weights and init_weights_seed only draw the starting
# weights, the PHM and invertible-adapter settings are unused while phm_layer is off and inv_adapter is None
# (both checked), and adapter_residual_before_ln only orders the residual around a LayerNorm of the adapter's
# own (ln_after, refused). Every other field is checked below.
_TOP_FIELDS = {"config", "name", "model_type", "hidden_size", "model_class", "model_name", "version", "type",
               "label2id"}


def _placement(cfg, refuse):
    """The tinymix placement whose function this BnConfig computes, or a refusal that says why none does."""
    mh, out = cfg.get("mh_adapter"), cfg.get("output_adapter")
    before, after = cfg.get("original_ln_before", False), cfg.get("original_ln_after", True)
    residual = cfg.get("residual_before_ln", True)
    if not out:
        refuse(f"mh_adapter={mh}, output_adapter={out}: tinymix's adapters always include one after the "
               "feed-forward sublayer (placements ffn, houlsby, pfeiffer); an adapter after the attention alone "
               "has no tinymix placement")
    if not before and after:                    # the adapter on the sublayer's output, before residual + LN
        return "houlsby" if mh else "ffn"       # (without original_ln_before, residual_before_ln changes nothing)
    if before and not after and not mh and residual is False:
        return "pfeiffer"
    if before and after:
        refuse("original_ln_before and original_ln_after are both true (AdapterHub's Pfeiffer config, seq_bn): "
               "LN(a(LN(x + h)) + h + x), a LayerNorm after the adapter too. tinymix's pfeiffer placement is "
               "y + a(y) on the layer's output y = LN(x + h), with no LayerNorm after it, another function")
    if before:
        refuse(f"original_ln_before with residual_before_ln={residual!r}{' and mh_adapter' if mh else ''}: the "
               "adapter's residual is not the LayerNorm's output it reads, or it also sits after the attention; "
               "tinymix's pfeiffer placement is exactly y + a(y) on each layer's output y (residual_before_ln "
               "false, original_ln_after false, output_adapter only)")
    refuse("original_ln_before and original_ln_after are both false: the sublayer's residual add and "
           "LayerNorm would be skipped; no tinymix placement computes that")


def adapter_config_from_hub(saved, where, hidden):
    """(tinymix's AdapterConfig, the adapter's name) for an AdapterHub adapter_config.json, or a ValueError
    that says what is wrong."""
    def refuse(why):
        raise ValueError(f"{where}: {why}")

    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        if isinstance(saved, dict) and "peft_type" in saved:
            refuse("this is a Hugging Face PEFT folder: import it with `python3 -m tinymix import-peft`")
        refuse("expected AdapterHub's adapter_config.json: a JSON object whose \"config\" is the adapter's "
               "full configuration (as AdapterHub's save_adapter writes it)")
    if "merged" in saved and "transformer" in saved:
        refuse("this is a tinymix adapter folder already: use it as it is (eval, export)")
    cfg = saved["config"]
    if cfg.get("architecture") is not None:
        refuse(f"architecture {cfg['architecture']!r}: tinymix imports AdapterHub's bottleneck adapters only "
               "(no architecture field); for a LoRA use Hugging Face PEFT's format (import-peft)")
    model = saved.get("model_name") or ""
    if model and not str(model).rstrip("/").lower().endswith("all-minilm-l6-v2"):
        refuse(f"made for base model {model!r}. tinymix's BERT is {MINILM_NAME} (BertModel, hidden size 384, "
               "6 layers), and an adapter only means something on the weights it was trained with")
    if saved.get("model_type", "bert") != "bert" or saved.get("hidden_size", hidden) != hidden:
        refuse(f"made for a {saved.get('model_type')!r} model of hidden size {saved.get('hidden_size')}; "
               f"tinymix's {MINILM_NAME} is a BERT of hidden size {hidden}")
    name = saved.get("name")
    if not isinstance(name, str) or not name or "." in name:
        refuse(f"the adapter's name {name!r} is not a module name (its weights are keyed by it)")

    activation = cfg.get("non_linearity")
    if "version" not in saved and activation in ("gelu", "gelu_orig"):
        activation = {"gelu": "gelu_new", "gelu_orig": "gelu"}[activation]   # AdapterHub's rule for old files
    options = [
        (cfg.get("is_parallel"), "is_parallel is true: a parallel adapter reads the sublayer's input, "
                                 "tinymix's reads its output"),
        (cfg.get("ln_before") or cfg.get("ln_after"), "ln_before / ln_after: the adapter has LayerNorms of its "
                                                      "own, which tinymix's adapter does not"),
        (cfg.get("use_gating"), "use_gating is true: a learned gate scales the adapter's output (UniPELT's); "
                                "tinymix's adapter has none"),
        (cfg.get("scaling", 1.0) != 1.0, f"scaling {cfg.get('scaling')!r}: the adapter's output is scaled; "
                                         "tinymix adds it as it is (scaling 1.0)"),
        (cfg.get("phm_layer"), "phm_layer is true: its projections are PHM layers (Compacter), not Linear"),
        (cfg.get("inv_adapter"), f"inv_adapter {cfg.get('inv_adapter')!r}: an invertible adapter on the "
                                 "embeddings, which tinymix does not have"),
        (cfg.get("cross_adapter"), "cross_adapter is true: adapters after cross-attention, of a decoder"),
        (cfg.get("leave_out"), f"leave_out {cfg.get('leave_out')}: no adapter in those layers; tinymix puts "
                               "one in every layer"),
        (activation != "gelu", f"non_linearity {cfg.get('non_linearity')!r}"
                               f"{' (read as gelu_new: the file has no version field)' if activation == 'gelu_new' else ''}"
                               ": tinymix's adapter uses the exact GELU (AdapterHub's \"gelu\")"),
    ]
    for is_set, why in options:
        if is_set:
            refuse(why)
    unknown = sorted(k for k, v in cfg.items() if k not in PLAIN and k not in PLACEMENTS["ffn"]
                     and k not in ("reduction_factor", "architecture") and v not in (None, False, 0, "", [], {}))
    unknown += sorted(k for k, v in saved.items() if k not in _TOP_FIELDS and v not in (None, False, 0, "", [], {}))
    if unknown:
        refuse(f"sets {', '.join(unknown)}: tinymix imports plain bottleneck adapters and does not know what "
               "these options do to the outputs")
    placement = _placement(cfg, refuse)
    factor = cfg.get("reduction_factor")
    if isinstance(factor, dict):
        factors = {factor.get(str(i), factor.get("default")) for i in range(minilm_config().num_layers)}
        if len(factors) != 1 or None in factors:
            refuse(f"reduction_factor {factor}: a bottleneck per layer; tinymix's adapters have one bottleneck")
        factor = factors.pop()
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        refuse(f"reduction_factor must be a positive number, got {factor!r}")
    bottleneck = down_size(hidden, factor)
    if bottleneck > hidden:
        refuse(f"reduction_factor {factor} gives a bottleneck of {bottleneck}, wider than the hidden size {hidden}")
    return peft.AdapterConfig(bottleneck=bottleneck, placement=placement), name


def read_adapterhub(folder, base=None):
    """(AdapterConfig, {(layer, slot, weight): float32 array}, head or None) of an AdapterHub adapter
    folder, checked whole against `base` (a TransformerConfig; MiniLM's by default)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}: give the folder that holds adapter_config.json")
    base = base or minilm_config()
    config_file = folder / CONFIG_FILE
    saved = checkpoint.load_json(config_file)
    config, name = adapter_config_from_hub(saved, config_file, base.hidden_size)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() and (folder / PICKLE_FILE).is_file():
        raise ValueError(f"{folder} holds {PICKLE_FILE}, a pickle file, which tinymix never opens (loading a "
                         "pickle can run any code). Save the adapter again with AdapterHub's "
                         "model.save_adapter(folder, name, use_safetensors=True), which writes " + WEIGHTS_FILE)
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {folder}")
    data = weights.read_bytes()
    header, start = _header(data, weights)
    # saved from a model with a head (BertAdapterModel, BertForSequenceClassification) the keys start "bert."
    prefix = "bert." if header and all(k.startswith("bert.") for k in header) else ""
    names = weight_names(name, config.placement, base.num_layers, prefix)
    C, r = base.hidden_size, config.bottleneck
    shapes = {"down.weight": (r, C), "down.bias": (r,), "up.weight": (C, r), "up.bias": (C,)}
    expected = {key: shapes[ours] for (_, _, ours), key in names.items()}
    _check_tensors(header, expected, weights, f"Was it made for another model than MiniLM (hidden size {C}, "
                   f"{base.num_layers} layers), is {name!r} not the name its weights are saved under, or is "
                   f"reduction_factor in {CONFIG_FILE} not the one of its weights (bottleneck {r})?")
    arrays = _read_float32(data, header, start, weights)
    head = None
    if (folder / HEAD_FILE).is_file():
        head_data = (folder / HEAD_FILE).read_bytes()
        head_header, head_start = _header(head_data, folder / HEAD_FILE)
        labels = (head_header.get("classifier.weight", (None, (0,)))[1] or (0,))[0]
        _check_tensors(head_header, {"classifier.weight": (labels, C), "classifier.bias": (labels,)},
                       folder / HEAD_FILE, f"It should hold classifier.weight (classes, {C}) and classifier.bias "
                       "(classes,), as tinymix's export writes it")
        head = _read_float32(head_data, head_header, head_start, folder / HEAD_FILE)
    return config, {where: arrays[key] for where, key in names.items()}, head


def load_into(model, folder):
    """Load an AdapterHub adapter folder into a tinymix model (a Transformer, or a SequenceClassifier,
    which needs the folder's head.safetensors). A model without PEFT modules gets the adapter injected."""
    config, arrays, head = read_adapterhub(folder, peft._transformer(model).config)
    return _load(model, config, arrays, head, folder)


def _load(model, config, arrays, head, folder):
    with_head(model, config, head, folder, "an adapter")
    transformer = peft._transformer(model)
    for (i, slot, ours), array in arrays.items():
        side, what = ours.split(".")
        getattr(getattr(getattr(transformer.layers[i], slot), side), what).data = from_numpy(array)
    peft.merge(model)              # nothing to collapse: it marks the model as deployed, one adapter per site
    return model


def import_adapterhub(hub_folder, out_folder, say=print):
    """Write an AdapterHub bottleneck adapter for MiniLM as a tinymix adapter folder (what save_adapter
    writes, marked merged: one adapter per site, as a run's merged/ holds it)."""
    folder, out = Path(hub_folder), Path(out_folder)
    base = minilm_config()
    config, arrays, head = read_adapterhub(folder, base)     # every check, before anything is built or written
    _check_destination(out, folder)
    num_labels = 0 if head is None else head["classifier.weight"].shape[0]
    model = _load(_skeleton(base, num_labels), config, arrays, head, folder)
    peft.save_adapter(model, out)
    say(f"imported an adapter (placement {config.placement}, bottleneck {config.bottleneck}) for MiniLM from "
        f"{folder} into {out}" + (f", with its {num_labels}-class head" if num_labels else ""))
    if (folder / "head_config.json").is_file():
        say("AdapterHub's prediction head in that folder (head_config.json) is not imported: tinymix's "
            f"classifier pools the mean of the tokens, AdapterHub's the first token; a head comes in from {HEAD_FILE}")
    if num_labels:
        say(f"evaluate it with: python3 -m tinymix eval {out}")
    else:
        say(f"no head ({HEAD_FILE}): load it onto MiniLM's Transformer with "
            f"peft.load_adapter(transformer, {str(out)!r})")
    return model
