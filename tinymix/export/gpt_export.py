"""The tiny GPT goes out as a transformers GPT2LMHeadModel folder: the files
`AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)` read. So does a
tiny GPT fine-tuned on the e2e task, its merged adapter applied to the checkpoint it was trained on and
every update folded into the weights, when the deployed model is a plain GPT with other weights.

    export_gpt("data/tiny_gpt", "runs/tiny_gpt_hf")       # python3 -m tinymix export data/tiny_gpt --format transformers
    export_gpt("runs/e2e-lora/merged", "runs/e2e-lora/hf")  # a fine-tuned run (results.json beside merged/ names its base)

Why GPT-2 computes the same function, part by part (checked against transformers' GPT2 code, 4.57 and 5.x):
    tinymix decoder (transformer.py)                    GPT2LMHeadModel (config.json)
    word + learned position embeddings, no LayerNorm    wte + wpe (positions 0.. , as tinymix's)
    pre-LN blocks: x + attn(LN1(x)), x + ffn(LN2(x))    GPT2Block: the same order; ln_1, ln_2
    softmax(q k / sqrt(D) + causal mask) v              scale_attn_weights true (head_dim ** -0.5), by
                                                        layer index false, reorder_and_upcast_attn false
    separate query, key, value Linears with biases      one c_attn Conv1D: [W_q; W_k; W_v] side by side,
                                                        heads the same slices of each (split, then view)
    FFN Linear -> GELU -> Linear                        mlp.c_fc -> act -> mlp.c_proj, n_inner = FFN size
    GELU tanh form (gelu_approximate true)              activation_function "gelu_new":
                                                        0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    GELU erf form (gelu_approximate false)              activation_function "gelu" (torch's exact GELU)
    final LayerNorm, eps                                ln_f, layer_norm_epsilon
    LM head tied to the word embeddings, no bias        lm_head tied to wte (tie_word_embeddings true)
GPT-2's Conv1D computes x W + b with W stored (in, out): the transpose of tinymix's (out, in) Linear weight,
so every matrix is written transposed. Dropout (resid/embd/attn_pdrop) is the checkpoint's, off at inference.

The tokenizer: tinymix's own tokenizer.json (byte-level BPE, `tokenizers`), byte for byte, with a
tokenizer_config.json that makes AutoTokenizer load it as a PreTrainedTokenizerFast: the same ids for the
same text (no special token added: the BPE has no post-processor), <|pad|> (0) for padding and
<|endoftext|> (1) as the end (and start) token. Two defaults differ from tinymix's Tokenizer, and the
README written with the folder says so: transformers truncates to model_max_length (128) only when asked
(truncation=True), and its decode keeps special tokens unless skip_special_tokens=True.

What cannot go out as a GPT-2: a run whose deployed model keeps a module of its own, which no GPT-2 weight
can absorb (an adapter's bottleneck with its nonlinearity, a prefix's learned keys and values, UniPELT's
input-dependent gates, ...): `_refuse_unfoldable` says which and why, and `gpt2_weights` refuses anything
left over that is not a plain Linear, LayerNorm or embedding. A fine-tuned run also needs its base: the
checkpoint named by results.json beside merged/, whose weights must still be the ones the run started
from (the sha256 the run recorded).
"""
import json
from pathlib import Path

from .. import peft, pretrained
from ..backend import xp
from ..nn import Embedding, LayerNorm, Linear
from ..store import checkpoint, files
from ..transformer import LanguageModel
from . import peft_export

MODEL_FILE, CONFIG_JSON = "model.safetensors", "config.json"
TOKENIZER_JSON, TOKENIZER_CONFIG = "tokenizer.json", "tokenizer_config.json"
ARCHITECTURE = "GPT2LMHeadModel"
ACTIVATION = {True: "gelu_new", False: "gelu"}            # tinymix's gelu_approximate -> GPT-2's name
PAD, END = "<|pad|>", "<|endoftext|>"
# methods whose deployed model is the GPT with other weights once every update is folded in
FOLDED = {"lora": "each LoRA update (alpha / r) B A folded into its weight",
          "adamix": "the AdaMix-LoRA's experts averaged into one LoRA, folded into its weight",
          "adalora": "each AdaLoRA update (alpha / r) P diag(lambda) Q folded into its weight",
          "loretta_rep": "each LoRETTA-rep update (alpha / r) B A (tensor-train factors) folded into its weight",
          "hadamard": "each Hadamard adapter w * h + b (a mixture: its experts' mean) folded into the attention "
                      "output projection",
          "full": "every weight as fine-tuned", "bitfit": "the biases as fine-tuned",
          "ft_top": "the top layers and the final LayerNorm as fine-tuned"}


# ---- what the folder is ------------------------------------------------------------------------------

def is_gpt_checkpoint(folder):
    """A tiny GPT checkpoint folder (what pretrain-gpt writes), not an adapter folder."""
    folder = Path(folder)
    return (folder / MODEL_FILE).is_file() and (folder / CONFIG_JSON).is_file() and \
        not (folder / peft_export.CONFIG_FILE).exists()


def is_gpt_adapter(folder):
    """A tinymix adapter folder saved on a decoder (an e2e run's merged/)."""
    try:
        saved = checkpoint.load_json(Path(folder) / peft_export.CONFIG_FILE)
    except (FileNotFoundError, ValueError):
        return False
    return isinstance(saved, dict) and isinstance(saved.get("transformer"), dict) and \
        saved["transformer"].get("kind") == "decoder" and "config" in saved


# ---- the names and the arrays ---------------------------------------------------------------------------

def special_ids(tokenizer, config):
    """(pad id, end id) of the tiny GPT's tokenizer, or a refusal of one without them."""
    pad, end = (tokenizer.tokenizer.token_to_id(token) for token in (PAD, END))
    if pad is None or end is None or pad != config.pad_token_id:
        raise ValueError(f"the tokenizer has no {PAD} (the model's pad id {config.pad_token_id}) and {END} tokens, "
                         "which pretrain-gpt's tokenizer has: it is not the tiny GPT's")
    return pad, end


def gpt2_config(config, tokenizer):
    """GPT2Config's fields for a tinymix decoder's TransformerConfig (see the module docstring)."""
    pad, end = special_ids(tokenizer, config)
    return {"architectures": [ARCHITECTURE], "model_type": "gpt2",
            "vocab_size": config.vocab_size, "n_positions": config.max_positions, "n_embd": config.hidden_size,
            "n_layer": config.num_layers, "n_head": config.num_heads, "n_inner": config.intermediate_size,
            "activation_function": ACTIVATION[bool(config.gelu_approximate)],
            "layer_norm_epsilon": config.layer_norm_eps, "resid_pdrop": config.dropout,
            "embd_pdrop": config.dropout, "attn_pdrop": config.dropout, "initializer_range": 0.02,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "add_cross_attention": False, "tie_word_embeddings": True,
            "use_cache": True, "bos_token_id": end, "eos_token_id": end, "pad_token_id": pad}


def _plain(module, kind, where):
    """The module if it is a plain `kind` (Linear, LayerNorm, Embedding); a folded LoRA-like layer's base
    Linear; else a refusal naming what is left there."""
    if type(module) is kind:
        return module
    if kind is Linear and getattr(module, "merged", False) and type(getattr(module, "base", None)) is Linear:
        return module.base
    raise ValueError(f"{where} is a {type(module).__name__}, not a plain {kind.__name__}: GPT-2 has no place for it, "
                     "so the model cannot be written as a GPT2LMHeadModel")


def gpt2_weights(transformer):
    """{GPT2LMHeadModel weight name: float32 xp array} for a plain tinymix decoder (every update folded in).
    The LM head is tied to transformer.wte.weight and not stored, as save_pretrained leaves it out."""
    if transformer.config.kind != "decoder":
        raise ValueError("only a decoder (GPT) goes out as a GPT2LMHeadModel")
    if getattr(transformer, "position_offset", 0) != 0:
        raise ValueError("the model's tokens start at position "
                         f"{transformer.position_offset} (a prefix occupies the first ones): GPT-2 numbers them from 0")
    arrays = {"transformer.wte.weight": _plain(transformer.word_embeddings, Embedding, "word_embeddings").weight.data,
              "transformer.wpe.weight": _plain(transformer.position_embeddings, Embedding,
                                               "position_embeddings").weight.data}
    for i, block in enumerate(transformer.layers):
        where, to = f"layers.{i}", f"transformer.h.{i}"
        for slot in ("attention_adapter", "ffn_adapter", "output_adapter"):
            if getattr(block, slot) is not None:
                raise ValueError(f"{where}.{slot} holds a {type(getattr(block, slot)).__name__}: a module of its own "
                                 "inside the block, which GPT-2 has no place for")
        if getattr(block.attention, "prefix", None) is not None:
            raise ValueError(f"{where}.attention has a prefix (learned keys and values): GPT-2's weights have no "
                             "place for them")
        q, k, v, o = (_plain(getattr(block.attention, n), Linear, f"{where}.attention.{n}")
                      for n in ("query", "key", "value", "output"))
        up, down = (_plain(getattr(block, n), Linear, f"{where}.{n}") for n in ("intermediate", "output"))
        norms = {"ln_1": block.attention_norm, "ln_2": block.output_norm}
        for name, norm in norms.items():
            norm = _plain(norm, LayerNorm, f"{where}.{'attention_norm' if name == 'ln_1' else 'output_norm'}")
            arrays[f"{to}.{name}.weight"], arrays[f"{to}.{name}.bias"] = norm.weight.data, norm.bias.data
        # Conv1D: x W + b, W (in, out): tinymix's (out, in) weights transposed; c_attn holds q, k, v side by side
        arrays[f"{to}.attn.c_attn.weight"] = xp.concatenate([m.weight.data.T for m in (q, k, v)], axis=1)
        arrays[f"{to}.attn.c_attn.bias"] = xp.concatenate([m.bias.data for m in (q, k, v)])
        for name, linear in (("attn.c_proj", o), ("mlp.c_fc", up), ("mlp.c_proj", down)):
            arrays[f"{to}.{name}.weight"] = xp.ascontiguousarray(linear.weight.data.T)
            arrays[f"{to}.{name}.bias"] = linear.bias.data
    final = _plain(transformer.final_norm, LayerNorm, "final_norm")
    arrays["transformer.ln_f.weight"], arrays["transformer.ln_f.bias"] = final.weight.data, final.bias.data
    return arrays


def tokenizer_config(config):
    """tokenizer_config.json: tinymix's tokenizer.json loaded as a PreTrainedTokenizerFast."""
    return {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.max_positions,
            "bos_token": END, "eos_token": END, "pad_token": PAD, "padding_side": "right",
            "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False}


# ---- a fine-tuned run --------------------------------------------------------------------------------------

def _refuse_unfoldable(config, folder):
    """A clear refusal of a method whose deployed model keeps a module GPT-2 has no place for."""
    method = config.method
    if method == "adamix" and config.module == "lora" or method != "adamix" and method in FOLDED:
        return                                                   # an AdaMix-LoRA folds; an AdaMix-adapter does not
    if method in ("adapter", "adamix"):
        raise ValueError(f"{folder} holds bottleneck adapters (h + up(gelu(down(h))) inside every block): a small "
                         "network with a nonlinearity between its two projections, which no weight of GPT-2 can "
                         "absorb, and GPT2LMHeadModel has no place for it (tinymix's --format adapterhub writes "
                         "adapters for MiniLM's BertModel only). A GPT fine-tuned with lora, adamix-lora, adalora, "
                         "hadamard, loretta-rep, ft-top2 or full goes out as a GPT-2")
    if method == "prefix":
        raise ValueError(f"{folder} holds prefix-tuning: learned keys and values in front of every layer's own, and "
                         "the sentence's positions shifted past them. GPT2LMHeadModel's weights have no place for "
                         "them (transformers takes them only at call time, as past_key_values), so no GPT-2 folder "
                         "computes this model")
    if method == "unipelt":
        raise ValueError(f"{folder} holds UniPELT: a prefix, an adapter and LoRA behind gates computed from each "
                         "input, so no fixed weights compute it, and GPT-2 has no place for the gates")
    if method in ("phm", "mixphm", "loretta_adp"):
        raise ValueError(f"{folder} holds {method} adapters: small networks with a nonlinearity inside every block, "
                         "which no weight of GPT-2 can absorb")
    raise ValueError(f"{folder} holds {method}, which tinymix does not fold into a GPT-2's weights")


def base_of_run(folder):
    """The tiny GPT checkpoint a run's merged/ was trained on: results.json beside it names the model, and
    the sha256 it recorded must still be that checkpoint's weights file."""
    results = Path(folder).parent / "results.json"
    if not results.is_file():
        raise ValueError(f"{folder} has no results.json beside it ({results}), which names the tiny GPT checkpoint "
                         "the run started from: give the merged/ folder of a `train --task e2e --out RUN` run")
    record = checkpoint.load_json(results)
    model = (record.get("config") or {}).get("model") if isinstance(record, dict) else None
    if not isinstance(model, str) or not model:
        raise ValueError(f"{results} does not say which model the run was trained on (config.model)")
    base = pretrained.TINY_GPT_DIR if model == "tiny-gpt" else Path(model)
    if not (base / MODEL_FILE).is_file():
        raise ValueError(f"the run was trained on {model!r}, and {base} holds no tiny GPT checkpoint now")
    recorded, now = record.get("pretrained_weights"), files.sha256(base / MODEL_FILE)
    if recorded != now:
        raise ValueError(f"the run was trained on {model!r} ({base}), whose weights file has changed since: the run "
                         f"recorded sha256 {recorded}, the file is {now} now. The fine-tuned model would be the new "
                         "weights with the run's update, which is no model the run trained")
    return base


def deployed_model(folder):
    """(the decoder Transformer of a fine-tuned run, every update folded in, its tokenizer, its config,
    the base checkpoint folder): the run's merged adapter loaded onto its base, as tinymix deploys it."""
    from ..neighbours import adalora, hadamard
    saved, config = peft_export.read_tinymix_adapter(folder)
    _refuse_unfoldable(config, folder)
    base = base_of_run(folder)
    backbone, tokenizer = pretrained.load_gpt(base)
    model = peft.load_adapter(LanguageModel(backbone), folder).eval()
    peft.merge(model, fold_lora=True)               # mixtures -> their mean; LoRA (and LoRETTA-rep) folded
    if config.method == "adalora":
        adalora.merge(model)
    if config.method == "hadamard":
        hadamard.merge(model)
    return model.transformer, tokenizer, config, base


# ---- the export ----------------------------------------------------------------------------------------------

def export_gpt(source, out_folder, say=print):
    """Write the tiny GPT checkpoint in `source`, or the fine-tuned GPT of a run's merged/ folder, as a
    transformers GPT2LMHeadModel folder with its tokenizer. Returns {file name: size in bytes}."""
    from ..e2e import gpt_folder
    source, out = Path(source), Path(out_folder)
    if is_gpt_adapter(source):
        transformer, tokenizer, config, base = deployed_model(source)
        made = ("fine-tuned", config, base)
    else:
        gpt_folder.check(source)
        transformer, tokenizer = pretrained.load_gpt(source)
        made = ("checkpoint", None, source)
    if out.resolve() == source.resolve() or out.resolve() == made[2].resolve():
        raise ValueError(f"--out {out} is the folder being converted: choose another folder")
    for name in (MODEL_FILE, CONFIG_JSON, peft_export.CONFIG_FILE):
        if (out / name).exists():
            raise ValueError(f"{out} already holds a model ({out / name}); writing there would replace it: choose "
                             "a new or empty folder, or delete that one first")
    weights = gpt2_weights(transformer)
    hf_config = gpt2_config(transformer.config, tokenizer)
    checkpoint.save_arrays(out / MODEL_FILE, weights, metadata={"format": "pt"})
    checkpoint.save_json(out / CONFIG_JSON, hf_config)
    files.atomic_write(out / TOKENIZER_JSON, (made[2] / TOKENIZER_JSON).read_bytes())     # the checkpoint's own
    checkpoint.save_json(out / TOKENIZER_CONFIG, tokenizer_config(transformer.config))
    (out / "README.md").write_text(_readme(source, made, hf_config, tokenizer))
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.name in
             (MODEL_FILE, CONFIG_JSON, TOKENIZER_JSON, TOKENIZER_CONFIG, "README.md")}
    what = "the tiny GPT" if made[0] == "checkpoint" else (
        f"the tiny GPT fine-tuned with {_method_name(made[1])} ({FOLDED[made[1].method]})")
    say(f"wrote {what} as a transformers {ARCHITECTURE} folder to {out}: {len(weights)} tensors, "
        f"{sum(a.size for a in weights.values()):,d} numbers (the LM head tied to transformer.wte.weight)")
    for name, size in sizes.items():
        say(f"  {name:<27} {size:>11,d} bytes")
    say(f"load it with: AutoModelForCausalLM.from_pretrained({str(out)!r}); AutoTokenizer.from_pretrained({str(out)!r})")
    return sizes


def _method_name(config):
    names = {"adamix": "adamix-lora", "loretta_rep": "loretta-rep", "ft_top": "ft-top2",
             "hadamard": "adamix-hadamard" if getattr(config, "num_experts", 1) > 1 else "hadamard"}
    return names.get(config.method, config.method)


def _readme(source, made, hf_config, tokenizer):
    kind, config, base = made
    if kind == "checkpoint":
        origin = f"the tiny GPT checkpoint in `{source}` (tinymix's own decoder, pretrained by `pretrain-gpt`)"
    else:
        origin = (f"the tiny GPT in `{base}` fine-tuned with tinymix method `{_method_name(config)}`: the run's "
                  f"`{source}` applied to it, {FOLDED[config.method]}, as tinymix deploys it")
    c = hf_config
    fields = ", ".join(f"{k}={json.dumps(c[k])}" for k in (
        "n_layer", "n_head", "n_embd", "n_inner", "n_positions", "vocab_size", "activation_function",
        "layer_norm_epsilon", "scale_attn_weights", "tie_word_embeddings"))
    gelu = ("tanh form, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): transformers' \"gelu_new\""
            if c["activation_function"] == "gelu_new" else "exact erf form: transformers' \"gelu\"")
    return f"""# {"A fine-tuned tiny GPT" if kind != "checkpoint" else "The tiny GPT"} as a transformers GPT2LMHeadModel, exported by tinymix

Made by `python3 -m tinymix export --format transformers` from {origin}.

## The model: GPT2LMHeadModel

`config.json` and `model.safetensors` (float32) are a transformers `GPT2LMHeadModel` that computes the same
next-token logits as the tinymix model, up to float32 rounding: {fields}. The tiny GPT is GPT-2's
architecture at a small size: learned position embeddings, pre-LayerNorm blocks, attention scaled by
1 / sqrt(head size), GELU ({gelu}), a final LayerNorm, and the LM head tied to the token embeddings.
GPT-2 stores its Conv1D weights as (in, out), the transpose of tinymix's Linear weights, and the query,
key and value weights side by side in `attn.c_attn`; `lm_head.weight` is not stored (it is
`transformer.wte.weight`).

## The tokenizer: PreTrainedTokenizerFast

`tokenizer.json` is tinymix's own byte-level BPE ({tokenizer.vocab_size} tokens), unchanged;
`tokenizer_config.json` makes `AutoTokenizer` load it as a `PreTrainedTokenizerFast`, which gives the same
ids as tinymix for the same text (nothing is added at the start or end). `<|pad|>` (id 0) pads,
`<|endoftext|>` (id 1) ends a text (generation stops at it). Two defaults differ from tinymix's tokenizer:
transformers truncates to {c["n_positions"]} tokens only with `truncation=True`, and its `decode` keeps
`<|endoftext|>` unless `skip_special_tokens=True`.

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")
    tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
    ids = tokenizer("name The Eagle, type pub, food Italian =>", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=40, do_sample=False)     # greedy, as tinymix's decode.greedy
    print(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))

The context window is {c["n_positions"]} tokens, prompt and output together. Batches for `generate` need
left padding (`tokenizer.padding_side = "left"`); one prompt at a time needs none.
"""
