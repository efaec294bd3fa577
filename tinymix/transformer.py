"""One Transformer, two shapes: a BERT-style encoder and a GPT-style decoder.

                        encoder (BERT, MiniLM)                 decoder (GPT)
    attention           bidirectional, padding mask            causal
    layer norm          post-LN: x = LN(x + sublayer(x))       pre-LN: x = x + sublayer(LN(x))
    embeddings          word + position + token type, LN       word + position
    head                sequence classifier (pooled)           LM head tied to the word embeddings

Sizes used in the shape comments: B batch, T time (tokens), C hidden, H heads, D = C / H head size,
V vocabulary. Each block has two places where parameter-efficient modules plug in (left None by
default): `attention_adapter` on the attention output and `ffn_adapter` on the FFN output, both before
dropout and the residual add — AdaMix's placement (docs/adamix.md section 2). LoRA instead replaces Linear
layers such as `attention.query` (see peft.py).

Decoding one token at a time, a decoder can keep every layer's keys and values (a KVCache) instead of
recomputing them for the whole prefix at each step: `model(new_ids, cache=cache)` runs only the new
positions, which attend to the cached ones. Causality makes this exact: an earlier position's keys and
values never depend on later tokens.
"""
from dataclasses import dataclass

from . import backend
from . import functional as F
from .backend import xp
from .nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList
from .tensor import Tensor

_MASKED = -1e9  # added to attention scores of masked keys: exp() of it is 0 in float32


@dataclass
class TransformerConfig:
    kind: str = "encoder"            # "encoder" (BERT) or "decoder" (GPT)
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2         # encoder only
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    gelu_approximate: bool = False   # BERT uses the exact erf form
    pad_token_id: int = 0

    def __post_init__(self):
        if self.kind not in ("encoder", "decoder"):
            raise ValueError(f"kind must be 'encoder' or 'decoder', got {self.kind!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")


class KVCache:
    """Per-layer keys (B, H, D, t) and values (B, H, t, D) of the t positions a decoder has seen.
    Pass it to Transformer.forward / LanguageModel.forward with the NEW tokens only; it grows in place.
    Holds raw arrays, no graph: for decoding under no_grad()."""

    def __init__(self, num_layers):
        self.keys = [None] * num_layers
        self.values = [None] * num_layers
        self.length = 0          # positions cached so far (the next token's position)

    def extend(self, layer, k, v):
        """Append this step's keys (B, H, D, T) and values (B, H, T, D); return all of them."""
        if self.keys[layer] is not None:
            k = xp.concatenate([self.keys[layer], k], axis=-1)        # (B, H, D, t + T)
            v = xp.concatenate([self.values[layer], v], axis=-2)      # (B, H, t + T, D)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def reorder(self, rows):
        """Keep batch rows `rows` (repeats allowed) in that order: beam search follows its parents."""
        rows = backend.from_numpy(backend.to_numpy(rows).astype("int64"))
        self.keys = [None if k is None else k[rows] for k in self.keys]
        self.values = [None if v is None else v[rows] for v in self.values]


class Attention(Module):
    prefix = None   # optional learned keys and values in front of the sequence's own (neighbours/prefix.py)

    def __init__(self, config):
        C = config.hidden_size
        self.num_heads = config.num_heads
        self.query, self.key, self.value = Linear(C, C), Linear(C, C), Linear(C, C)
        self.output = Linear(C, C)
        self.dropout = Dropout(config.dropout)

    def forward(self, x, mask_bias, cache=None, layer=0):
        B, T, C = x.shape
        H = self.num_heads
        D = C // H
        q = self.query(x).reshape(B, T, H, D).transpose(0, 2, 1, 3)    # (B, H, T, D)
        k = self.key(x).reshape(B, T, H, D).transpose(0, 2, 3, 1)      # (B, H, D, T)
        v = self.value(x).reshape(B, T, H, D).transpose(0, 2, 1, 3)    # (B, H, T, D)
        if self.prefix is not None:   # P more keys and values, visible to all; into a cache once, first
            k, v, mask_bias = self.prefix(x, k, v, mask_bias, cache is None or cache.keys[layer] is None)
        if cache is not None:   # prepend the t cached positions: (B, H, D, t + T), (B, H, t + T, D)
            k, v = (Tensor(a) for a in cache.extend(layer, k.data, v.data))
        # softmax(q k / sqrt(D) + mask) with dropout, @ v, as one fused op: the (B, H, T, T) or
        # (B, H, T, t + T) scores and weights are never separate graph nodes
        context = F.attention(q, k, v, mask_bias, self.dropout.p, self.training)   # (B, H, T, D)
        context = context.transpose(0, 2, 1, 3).reshape(B, T, C)                  # (B, T, C)
        return self.output(context)                                                # (B, T, C)


class Block(Module):
    def __init__(self, config):
        C = config.hidden_size
        self.pre_norm = config.kind == "decoder"
        self.gelu_approximate = config.gelu_approximate
        self.attention = Attention(config)
        self.attention_norm = LayerNorm(C, config.layer_norm_eps)
        self.intermediate = Linear(C, config.intermediate_size)  # FFN up:   C -> 4C
        self.output = Linear(config.intermediate_size, C)        # FFN down: 4C -> C
        self.output_norm = LayerNorm(C, config.layer_norm_eps)
        self.dropout = Dropout(config.dropout)
        self.attention_adapter = None  # plug-in points for adapters (peft.py)
        self.ffn_adapter = None
        self.output_adapter = None     # "pfeiffer" placement: on the block's output

    def _attention(self, x, mask_bias, cache=None, layer=0):
        h = self.attention(x, mask_bias, cache, layer)
        if self.attention_adapter is not None:
            h = self.attention_adapter(h)
        return self.dropout(h)

    def _ffn(self, x):
        h = self.output(F.gelu(self.intermediate(x), self.gelu_approximate))
        if self.ffn_adapter is not None:
            h = self.ffn_adapter(h)
        return self.dropout(h)

    def forward(self, x, mask_bias, cache=None, layer=0):               # (B, T, C) -> (B, T, C)
        if self.pre_norm:   # GPT
            x = x + self._attention(self.attention_norm(x), mask_bias, cache, layer)
            x = x + self._ffn(self.output_norm(x))
        else:               # BERT
            x = self.attention_norm(x + self._attention(x, mask_bias))
            x = self.output_norm(x + self._ffn(x))
        return x if self.output_adapter is None else self.output_adapter(x)


class Transformer(Module):
    position_offset = 0   # the first token's position (a prefix that occupies positions: neighbours/prefix.py)

    def __init__(self, config):
        C = config.hidden_size
        self.config = config
        self.word_embeddings = Embedding(config.vocab_size, C)
        self.position_embeddings = Embedding(config.max_positions, C)
        if config.kind == "encoder":
            self.token_type_embeddings = Embedding(config.type_vocab_size, C)
            self.embedding_norm = LayerNorm(C, config.layer_norm_eps)
        self.embedding_dropout = Dropout(config.dropout)
        self.layers = ModuleList(Block(config) for _ in range(config.num_layers))
        if config.kind == "decoder":
            self.final_norm = LayerNorm(C, config.layer_norm_eps)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, cache=None):
        """input_ids (B, T) integers; attention_mask (B, T) 1 for real tokens, 0 for padding.
        Returns the last hidden states (B, T, C). With a KVCache (decoder only), input_ids are the
        tokens after the cached ones: they take positions cache.length onwards, and the cache grows."""
        input_ids = input_ids.data if isinstance(input_ids, Tensor) else input_ids
        B, T = input_ids.shape
        past = 0 if cache is None else cache.length
        start = self.position_offset + past
        if cache is not None and (self.config.kind != "decoder" or attention_mask is not None):
            raise ValueError("a KVCache is for decoding with a decoder, without an attention mask")
        if start + T > self.config.max_positions:
            raise ValueError(f"sequence of {start + T} tokens is longer than the {self.config.max_positions} "
                             "positions of this model: truncate it (the tokenizer does, by default)")
        # positions start..start+T-1 are a slice of the table, and absent token types are all type 0, one
        # row: no gathers, and no index arrays made on the device (whose range check would make a GPU
        # wait for the host)
        positions = self.position_embeddings.weight[start:start + T]                       # (T, C)
        x = self.word_embeddings(input_ids) + positions[None]                              # (B, T, C)
        if self.config.kind == "encoder":
            if token_type_ids is None:
                types = self.token_type_embeddings.weight[0]                               # (C,)
            else:
                types = self.token_type_embeddings(token_type_ids)                         # (B, T, C)
            x = self.embedding_norm(x + types)
        x = self.embedding_dropout(x)
        mask_bias = self._mask_bias(B, T, attention_mask, past)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask_bias, cache, i)
        if cache is not None:
            cache.length += T
        if self.config.kind == "decoder":
            x = self.final_norm(x)
        return x

    def _mask_bias(self, B, T, attention_mask, past=0):
        """An additive bias on attention scores: 0 where a query may look, -1e9 where it may not.
        After `past` cached positions, query i sits at position past + i and sees keys 0..past + i."""
        if self.config.kind == "decoder":                               # causal: key j <= query i
            future = xp.triu(xp.ones((T, past + T), dtype=xp.bool_), k=past + 1)
            bias = xp.where(future, _MASKED, 0.0).astype(xp.float32)[None, None]   # (1, 1, T, past + T)
            if attention_mask is None:
                return bias
        else:
            bias = xp.zeros((1, 1, 1, T), dtype=xp.float32)
            if attention_mask is None:
                return bias
        keys = _as_xp(attention_mask).reshape(B, 1, 1, T) > 0                      # (B, 1, 1, T)
        return bias + xp.where(keys, 0.0, _MASKED).astype(xp.float32)

    def lm_logits(self, hidden):
        """The LM head, tied to the word embeddings: (B, T, C) -> (B, T, V)."""
        return hidden @ self.word_embeddings.weight.T


def _as_xp(array):
    return array.data if isinstance(array, Tensor) else backend.from_numpy(array)


def mean_pool(hidden, attention_mask):
    """Mean of the hidden states over real (non-pad) tokens: (B, T, C), (B, T) -> (B, C).
    The sentence-transformers recipe for MiniLM sentence embeddings."""
    mask = _as_xp(attention_mask).astype(xp.float32)[:, :, None]   # (B, T, 1)
    counts = xp.maximum(mask.sum(axis=1), 1.0)                     # (B, 1)
    return (hidden * mask).sum(axis=1) / counts                    # (B, C)


class SequenceClassifier(Module):
    """A Transformer encoder, a pooled sentence vector, and a linear classifier on top."""

    def __init__(self, transformer, num_labels, pooling="mean", dropout=0.1):
        if pooling not in ("mean", "first"):
            raise ValueError(f"pooling must be 'mean' or 'first', got {pooling!r}")
        self.transformer = transformer
        self.pooling = pooling
        self.dropout = Dropout(dropout)
        self.classifier = Linear(transformer.config.hidden_size, num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):   # -> (B, num_labels)
        hidden = self.transformer(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        if self.pooling == "first":
            pooled = hidden[:, 0]                                             # (B, C)
        elif attention_mask is None:
            pooled = hidden.mean(axis=1)
        else:
            pooled = mean_pool(hidden, attention_mask)
        return self.classifier(self.dropout(pooled))


class LanguageModel(Module):
    """A Transformer decoder with its tied LM head: input ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, transformer):
        if transformer.config.kind != "decoder":
            raise ValueError("LanguageModel needs a decoder Transformer (config.kind='decoder')")
        self.transformer = transformer

    def forward(self, input_ids, attention_mask=None, cache=None):
        return self.transformer.lm_logits(self.transformer(input_ids, attention_mask, cache=cache))

    def new_cache(self):
        """An empty KVCache for this model's layers."""
        return KVCache(len(self.transformer.layers))
