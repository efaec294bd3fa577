"""A Hugging Face PEFT LoRA for all-MiniLM-L6-v2's BertModel, into tinymix: checked whole, then loaded.

    import_peft("some/peft_lora", "runs/imported")   # python3 -m tinymix import-peft some/peft_lora --out ...
    load_adapter(model, "some/peft_lora")            # the same checks, straight into a model

Everything is checked before any weight is read: adapter_config.json (another base model, options
tinymix's LoRA cannot compute: rsLoRA, DoRA, biases, fan_in_fan_out, per-module ranks, ...), the
target modules against BertModel's module names (PEFT's own matching rule), and the safetensors
header (every expected key present, no other, each shape and dtype). Only then are the arrays read.
The names, the format and the export are in peft_export.py.
"""
import json
import struct
from pathlib import Path

from ..store import checkpoint
from .. import peft
from ..backend import from_numpy
from .peft_export import (BERT_NAMES, CONFIG_FILE, HEAD_FILE, MINILM_NAME, PREFIX, WEIGHTS_FILE,
                      _check_destination, _lora_layers, _skeleton, minilm_config, resolve_targets)

# adapter_config.json fields that do not change what a LoRA computes at inference, or that are checked
# one by one below. Any OTHER field set to something other than "off" (None, False, 0, empty) is refused:
# tinymix cannot know what a PEFT option it has never seen does to the outputs.
_KNOWN_FIELDS = {"peft_type", "task_type", "base_model_name_or_path", "revision", "auto_mapping", "peft_version",
                 "inference_mode", "lora_dropout", "init_lora_weights", "megatron_core", "qalora_group_size",
                 "r", "lora_alpha", "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern",
                 "bias", "lora_bias", "fan_in_fan_out", "use_rslora", "use_dora", "rank_pattern", "alpha_pattern",
                 "modules_to_save"}
_PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal")   # initialisations that leave W alone
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")                    # read as float32


# ---- adapter_config.json ------------------------------------------------------------------------------

def lora_config_from_peft(cfg, where, num_layers):
    """tinymix's LoRAConfig for a PEFT LoRA config dict, or a ValueError that says what is wrong."""
    def refuse(why):
        raise ValueError(f"{where}: {why}")

    if not isinstance(cfg, dict):
        refuse("expected a JSON object ({...}) with the PEFT config")
    if cfg.get("peft_type") != "LORA":
        refuse(f"peft_type is {cfg.get('peft_type')!r}: tinymix imports LoRA adapters only (peft_type \"LORA\")")
    base = cfg.get("base_model_name_or_path")
    if base and not str(base).rstrip("/").lower().endswith("all-minilm-l6-v2"):
        refuse(f"made for base model {base!r}. tinymix's BERT is {MINILM_NAME} (BertModel, hidden size 384, "
               "6 layers), and a LoRA only means something on the weights it was trained with")
    options = [
        (cfg.get("use_rslora"), "use_rslora is true: rsLoRA scales the update by lora_alpha / sqrt(r), "
                                "tinymix's LoRA by lora_alpha / r"),
        (cfg.get("use_dora"), "use_dora is true: DoRA also rescales every weight column by a learned "
                              "magnitude, which tinymix's LoRA does not have"),
        (cfg.get("bias", "none") != "none", f"bias is {cfg.get('bias')!r}: the adapter also retrained base-model "
                                            "biases, which a tinymix LoRA does not hold (only bias \"none\")"),
        (cfg.get("lora_bias"), "lora_bias is true: its lora_B layers have biases; tinymix's have none"),
        (cfg.get("fan_in_fan_out"), "fan_in_fan_out is true: that layout is for GPT-2's Conv1D weights "
                                    "(in, out); BertModel's Linear weights are (out, in)"),
        (cfg.get("rank_pattern") or cfg.get("alpha_pattern"), "rank_pattern / alpha_pattern give some modules "
                                                             "their own r or lora_alpha; tinymix has one of each"),
        (cfg.get("modules_to_save"), f"modules_to_save {cfg.get('modules_to_save')}: the adapter also holds "
                                     "fully retrained copies of those modules, which a tinymix LoRA cannot hold"),
        (cfg.get("init_lora_weights", True) not in _PLAIN_INITS,
         f"init_lora_weights {cfg.get('init_lora_weights')!r}: with it PEFT may change the base weights too "
         "(PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA), so the LoRA alone is not the adapter. Save it from PEFT with "
         "path_initial_model_for_weight_conversion to get a plain LoRA"),
    ]
    for is_set, why in options:
        if is_set:
            refuse(why)
    unknown = sorted(k for k, v in cfg.items() if k not in _KNOWN_FIELDS and v not in (None, False, 0, "", [], {}))
    if unknown:
        refuse(f"sets {', '.join(f'{k}={cfg[k]!r}' for k in unknown)}: tinymix imports plain LoRA and does not "
               "know what these options do to the outputs")

    rank, alpha, dropout = cfg.get("r", 8), cfg.get("lora_alpha", 8), cfg.get("lora_dropout", 0.0)  # PEFT defaults
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        refuse(f"r must be a positive integer, got {rank!r}")
    for field, value in (("lora_alpha", alpha), ("lora_dropout", dropout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            refuse(f"{field} must be a number, got {value!r}")
    if not 0 <= dropout < 1:
        refuse(f"lora_dropout must be in [0, 1), got {dropout}")
    targets = _tinymix_targets(cfg, refuse, num_layers)
    return peft.LoRAConfig(rank=rank, alpha=float(alpha), dropout=float(dropout), target_modules=targets)


def _tinymix_targets(cfg, refuse, num_layers):
    """The tinymix LoRA targets a PEFT config selects, the same in every layer, or a refusal."""
    target_modules = cfg.get("target_modules")
    if target_modules is None:
        target_modules = ["query", "value"]                  # PEFT's default for BERT models
    if target_modules == "all-linear":
        refuse("target_modules 'all-linear' is resolved by PEFT against the model at load time; list the "
               f"modules instead (tinymix has {', '.join(BERT_NAMES.values())})")
    is_names = isinstance(target_modules, list) and all(isinstance(t, str) for t in target_modules)
    if not (isinstance(target_modules, str) or is_names):
        refuse(f"target_modules must be a list of module names or one regular expression, got {target_modules!r}")
    selected = resolve_targets(target_modules, num_layers, cfg.get("exclude_modules"))
    layers = cfg.get("layers_to_transform")
    if layers not in (None, []) and is_names:                # PEFT applies it to a list of names only
        layers = [layers] if isinstance(layers, int) else layers
        if not isinstance(layers, list) or not all(isinstance(i, int) for i in layers):
            refuse(f"layers_to_transform must be a layer index or a list of them, got {layers!r}")
        selected = [n for n in selected if not n.startswith("encoder.layer.") or int(n.split(".")[2]) in layers]
    by_bert_name = {name: target for target, name in BERT_NAMES.items()}
    per_layer, foreign = [set() for _ in range(num_layers)], []
    for name in selected:
        parts = name.split(".")
        suffix = ".".join(parts[3:])
        if name.startswith("encoder.layer.") and suffix in by_bert_name:
            per_layer[int(parts[2])].add(by_bert_name[suffix])
        else:
            foreign.append(name)
    if foreign:
        refuse(f"target_modules {target_modules!r} selects BertModel modules tinymix has no LoRA for: "
               f"{', '.join(foreign[:6])}{' ...' if len(foreign) > 6 else ''} (tinymix's LoRA goes on "
               f"{', '.join(BERT_NAMES.values())})")
    if not selected:
        refuse(f"target_modules {target_modules!r} selects no module of BertModel")
    if any(layer != per_layer[0] for layer in per_layer):
        found = {i: sorted(layer) for i, layer in enumerate(per_layer)}
        refuse(f"the LoRA is on different modules in different layers ({found}); tinymix puts it on the same "
               "modules in every layer")
    return tuple(t for t in peft.LORA_TARGETS if t in per_layer[0])


# ---- the safetensors files ---------------------------------------------------------------------------

def _header(data, where):
    """{name: (dtype, shape, (start, end))} from a safetensors file's bytes; no tensor is read."""
    if len(data) < 8 or struct.unpack("<Q", data[:8])[0] > len(data) - 8:
        raise ValueError(f"{where} is not a safetensors file (too short for its header: truncated?)")
    length = struct.unpack("<Q", data[:8])[0]
    try:
        header = json.loads(data[8:8 + length])
        header.pop("__metadata__", None)
        entries = {name: (e["dtype"], tuple(e["shape"]), tuple(e["data_offsets"])) for name, e in header.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(f"{where} has a damaged safetensors header ({error}): save it again") from None
    body = len(data) - 8 - length
    for name, (_, _, offsets) in entries.items():
        valid = len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
        if not valid or not 0 <= offsets[0] <= offsets[1] <= body:
            raise ValueError(f"{where} has a damaged safetensors header ({name!r} at bytes {list(offsets)} of "
                             f"{body}): save it again")
    return entries, 8 + length


def _check_tensors(header, expected, where, advice):
    """Every expected key, no other, each with its shape and a float dtype."""
    missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_few(missing)}")
    if extra:
        hint = ""
        if any(k.startswith(PREFIX) and not k.startswith(PREFIX + "encoder.") for k in extra):
            hint = (" (keys under another model than BertModel, e.g. a model with a task head: tinymix reads "
                    f"LoRAs for BertModel, {PREFIX}encoder.layer.N....)")
        problems.append(f"unexpected keys ({len(extra)}): {_few(extra)}{hint}")
    for name in sorted(set(header) & set(expected)):
        dtype, shape, _ = header[name]
        if shape != expected[name]:
            problems.append(f"{name} has shape {shape}, expected {expected[name]}")
        if dtype not in FLOAT_DTYPES:
            problems.append(f"{name} has dtype {dtype}: weights must be floats ({', '.join(FLOAT_DTYPES)})")
    if problems:
        raise ValueError(f"{where} does not fit: " + "; ".join(problems[:8]) + f". {advice}")


def _few(names, count=4):
    return ", ".join(names[:count]) + (" ..." if len(names) > count else "")


def _read_float32(data, header, start, where):
    """The tensors as float32 host arrays. BF16 is widened bit-exactly here (a bfloat16 is the top half
    of a float32); F16 and F64 are cast."""
    entries, body, offset = {}, [], 0
    for name, (dtype, shape, (begin, end)) in header.items():
        raw = data[start + begin:start + end]
        if dtype == "BF16":
            wide = bytearray(2 * len(raw))
            wide[2::4], wide[3::4] = raw[0::2], raw[1::2]         # little-endian: low half zero
            raw, dtype = bytes(wide), "F32"
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        body.append(raw)
        offset += len(raw)
    text = json.dumps(entries).encode()
    arrays = checkpoint.load_array_bytes(struct.pack("<Q", len(text)) + text + b"".join(body), where)
    return {name: array.astype("float32") for name, array in arrays.items()}


# ---- the whole folder -----------------------------------------------------------------------------------

def read_peft(folder, base=None):
    """(LoRAConfig, {PEFT key: float32 array}, head {classifier.weight, classifier.bias} or None) of a
    PEFT LoRA folder, checked whole against `base` (a TransformerConfig; MiniLM's by default)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}: give the folder that holds adapter_config.json")
    base = base or minilm_config()
    config_file = folder / CONFIG_FILE
    config = lora_config_from_peft(checkpoint.load_json(config_file), config_file, base.num_layers)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() and (folder / "adapter_model.bin").is_file():
        raise ValueError(f"{folder} holds adapter_model.bin, a pickle file, which tinymix never opens (loading "
                         "a pickle can run any code). Save the adapter again with PEFT's save_pretrained, "
                         "which writes adapter_model.safetensors by default")
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {folder}")
    C, I = base.hidden_size, base.intermediate_size          # (out, in) of each target's weight
    sizes = {"query": (C, C), "key": (C, C), "value": (C, C), "attention_output": (C, C),
             "intermediate": (I, C), "output": (C, I)}
    expected = {}
    for i in range(base.num_layers):
        for target in config.target_modules:
            out, inp = sizes[target]
            name = f"{PREFIX}encoder.layer.{i}.{BERT_NAMES[target]}"
            expected[f"{name}.lora_A.weight"] = (config.rank, inp)
            expected[f"{name}.lora_B.weight"] = (out, config.rank)
    data = weights.read_bytes()
    header, start = _header(data, weights)
    _check_tensors(header, expected, weights, f"Was it made for another model than MiniLM (hidden size "
                   f"{base.hidden_size}), or is r = {config.rank} in {CONFIG_FILE} not the r of its weights?")
    head = None
    if (folder / HEAD_FILE).is_file():
        head_data = (folder / HEAD_FILE).read_bytes()
        head_header, head_start = _header(head_data, folder / HEAD_FILE)
        labels = (head_header.get("classifier.weight", (None, (0,)))[1] or (0,))[0]
        head_shapes = {"classifier.weight": (labels, C), "classifier.bias": (labels,)}
        _check_tensors(head_header, head_shapes, folder / HEAD_FILE,
                       f"It should hold classifier.weight (classes, {C}) and classifier.bias (classes,), as "
                       "tinymix's export writes it")
        head = _read_float32(head_data, head_header, head_start, folder / HEAD_FILE)
    return config, _read_float32(data, header, start, weights), head


def load_adapter(model, folder):
    """A tinymix adapter folder (peft.load_adapter) or a Hugging Face PEFT LoRA folder (load_into)."""
    saved = checkpoint.load_json(Path(folder) / "adapter_config.json")
    if isinstance(saved, dict) and "peft_type" in saved:
        return load_into(model, folder)
    return peft.load_adapter(model, folder)


def load_into(model, folder):
    """Load a PEFT LoRA folder into a tinymix model (a Transformer, or a SequenceClassifier, which
    needs the folder's head.safetensors). A model without PEFT modules gets the LoRA injected first."""
    config, arrays, head = read_peft(folder, peft._transformer(model).config)
    return _load(model, config, arrays, head, folder)


def _load(model, config, arrays, head, folder):
    with_head(model, config, head, folder, "a LoRA")
    for name, layer in _lora_layers(peft._transformer(model), config.target_modules):
        layer.lora_A.weight.data = from_numpy(arrays[f"{name}.lora_A.weight"])
        layer.lora_B.weight.data = from_numpy(arrays[f"{name}.lora_B.weight"])
    return model


def with_head(model, config, head, folder, what):
    """Before an imported folder's weights go in: its head must fit the model's classifier (which then
    takes it), and a model without PEFT modules gets `config` injected (one with them must have it)."""
    classifier = getattr(model, "classifier", None)
    if classifier is not None and head is None:
        raise ValueError(f"{folder} has no {HEAD_FILE}, and this model has a classifier: load the "
                         f"{what.split()[-1]} into the Transformer alone (model.transformer), or add the head file")
    if classifier is not None and tuple(head["classifier.weight"].shape) != classifier.weight.shape:
        raise ValueError(f"{folder / HEAD_FILE} has {head['classifier.weight'].shape[0]} classes, the model "
                         f"{classifier.weight.shape[0]}")
    if getattr(model, "peft_config", None) is None:
        peft.get_peft_model(model, config)
    elif peft.config_to_dict(model.peft_config) != peft.config_to_dict(config):
        raise ValueError(f"{folder} is {what} with {peft.config_to_dict(config)}, but the model has "
                         f"{peft.config_to_dict(model.peft_config)}")
    if classifier is not None:
        classifier.weight.data = from_numpy(head["classifier.weight"])
        classifier.bias.data = from_numpy(head["classifier.bias"])


def import_peft(peft_folder, out_folder, say=print):
    """Write a PEFT LoRA folder for MiniLM as a tinymix adapter folder (what save_adapter writes)."""
    folder, out = Path(peft_folder), Path(out_folder)
    base = minilm_config()
    config, arrays, head = read_peft(folder, base)     # every check, before anything is built or written
    _check_destination(out, folder)
    num_labels = 0 if head is None else head["classifier.weight"].shape[0]
    model = _load(_skeleton(base, num_labels), config, arrays, head, folder)
    peft.save_adapter(model, out)
    say(f"imported a LoRA (r={config.rank}, alpha={config.alpha:g}, targets {', '.join(config.target_modules)}) "
        f"for MiniLM from {folder} into {out}" + (f", with its {num_labels}-class head" if num_labels else ""))
    if num_labels:
        say(f"evaluate it with: python3 -m tinymix eval {out}")
    else:
        say(f"no head ({HEAD_FILE}): load it onto MiniLM's Transformer with "
            f"peft.load_adapter(transformer, {str(out)!r})")
    return model
