"""Prefix-tuning (Li and Liang, "Prefix-Tuning: Optimizing Continuous Prompts for Generation", ACL 2021):
P learned keys and values put in front of the sequence's own in every attention layer, everything else
frozen; trained through a reparameterisation MLP that is thrown away afterwards.

    model = inject(SequenceClassifier(minilm, 2), PrefixTuningConfig())       # or a LanguageModel (e2e)
    ... train ...
    deploy(model)     # the MLP's output computed once and kept as the prefix itself: the deployed model

1. In layer l, with the layer's keys K = x W_K + b_K and values V = x W_V + b_V (per head), attention
   becomes

        softmax(q [P_K^l ; K]^T / sqrt(D) + [0 ; mask]) [P_V^l ; V]        P_K^l, P_V^l in R^{P x C}

   The prefix is visible to every query (its mask columns are 0, in the encoder and under the decoder's
   causal mask alike); padding keys stay masked. The prefix has no position embedding of its own: it
   is a row of keys and values, not tokens run through the model.

2. Positions. Li and Liang's GPT-2 code (and Hugging Face PEFT, on any model) passes the prefix as the
   model's `past_key_values`, and those models number the real tokens after the past: the sentence's
   tokens take positions P .. P + T - 1, as if the prefix occupied the first P positions. That is the
   default here (shift_positions=True; Transformer.position_offset = P), and it costs the model P
   positions of context (MiniLM has 512, the tiny GPT's window shrinks by P: decoding accounts for it).
   UniPELT's BERT code passes the prefix beside the cache and keeps positions 0 .. T - 1
   (shift_positions=False, what unipelt.py uses).

3. Training-time reparameterisation (`prefix_projection`, on by default as in both official codes and
   PEFT's option of the same name): an embedding E in R^{P x C} and an MLP

        [P_K^1 ; P_V^1 ; ... ; P_K^L ; P_V^L] = W_2 tanh(W_1 E^T + b_1) + b_2       (P x 2 L C)

   with mid dimension 512, each row of the output read as (2L, H, D): layer l's keys are block 2l and
   its values block 2l + 1 (the official codes' and PEFT's layout, so their weights load as they are).
   deploy() computes the MLP's output once and keeps it as a plain (P, 2 L C) parameter, the same
   table PEFT builds with prefix_projection=False (or in inference mode); the embedding and the MLP
   are gone. Trainable on MiniLM (P = 10): 10 x 384 + 384 x 512 + 512 + 512 x 4608 + 4608 =
   2,564,864 while training, 10 x 4608 = 46,080 deployed (plus the task head in both).

4. A decoder's KV cache: the prefix goes into the cache once, at its start, when the cache is empty;
   each later step extends only the mask by P columns. Cached decoding gives the uncached outputs.

Against AdapterHub's PrefixTuningConfig (the `adapters` package, checked with 1.3.0: tests/
test_adapterhub_neighbours.py): the same prefix, differing in the positions only. Its reparameterisation
is this one term for term (wte = the embedding, control_trans = the MLP with non_linearity "tanh" and
bottleneck_size = encoder_hidden_size, each row read as (2L, H, D)), initialised as init="torch", and its
eject_prefix_tuning() is deploy(): its flat prefix is this table, row after row. Its BERT puts the prefix
into the attention and keeps the tokens at positions 0 .. T - 1, so it computes shift_positions=False;
the default here numbers them after the prefix, as PEFT and Li and Liang's code do (see 2). With the same
weights and no shift, MiniLM's sentence embeddings agree to about 1e-6.

Initialisation: Li and Liang's code and PEFT build the embedding and the MLP as fresh PyTorch modules:
E ~ N(0, 1) and each Linear U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias (init="torch", the
default). UniPELT's BERT model initialises them as BERT weights, N(0, 0.02) and zero biases
(init="bert").

Deviations, and why:
- The official code's prefix dropout (default 0.0 in its E2E script) and its initialisations from real
  words (low-data settings) are not built.
- No reparameterisation variant other than the one-hidden-layer MLP (the official code has a deeper one
  as an ablation).
- The decoder has no separate encoder/cross-attention prefixes: tinymix has no encoder-decoder model.
- Merging into the frozen weights is impossible (the prefix adds keys, not a weight update): deploy()
  removes only the MLP, and the deployed model attends over P + T keys at every layer.
"""
import math
from dataclasses import dataclass

from .. import backend, peft
from ..backend import xp
from ..nn import Linear, Module, Parameter
from ..tensor import Tensor, concatenate, no_grad

INITS = ("torch", "bert")


@dataclass
class PrefixTuningConfig:
    num_virtual_tokens: int = 10        # P, the prefix length (Li and Liang's table-to-text setting)
    prefix_projection: bool = True      # train through the MLP (deploy() removes it)
    encoder_hidden_size: int = 512      # the MLP's mid dimension
    shift_positions: bool = True        # real tokens at positions P .. P + T - 1 (see 2)
    init: str = "torch"                 # "torch" (Li and Liang, PEFT) or "bert" (UniPELT)
    method = "prefix"


def _torch_linear(in_features, out_features):
    """A Linear as torch.nn.Linear initialises one: weight and bias U(-1/sqrt(in), 1/sqrt(in))."""
    layer = Linear(in_features, out_features)
    bound = 1.0 / math.sqrt(in_features)
    layer.weight.data = backend.host_uniform((out_features, in_features), -bound, bound)
    layer.bias.data = backend.host_uniform((out_features,), -bound, bound)
    return layer


class PrefixEncoder(Module):
    """Every layer's prefix keys and values: while training, an embedding (P, C) through the MLP
    C -> mid -> 2 L C; deployed, a plain table (P, 2 L C). One per model, read by every layer."""

    def __init__(self, length, hidden, layers, mid, projection=True, init="torch"):
        self.length, self.hidden, self.layers = length, hidden, layers
        if not projection:
            self.table = Parameter(backend.host_normal((length, 2 * layers * hidden), 1.0 if init == "torch" else 0.02))
            return
        if init == "torch":
            self.embedding = Parameter(backend.host_normal((length, hidden), 1.0))
            self.down, self.up = _torch_linear(hidden, mid), _torch_linear(mid, 2 * layers * hidden)
        else:
            self.embedding = Parameter(backend.host_normal((length, hidden), 0.02))
            self.down, self.up = Linear(hidden, mid), Linear(mid, 2 * layers * hidden)

    @property
    def projected(self):
        return not hasattr(self, "table")

    def layer(self, i):
        """Layer i's keys then values, (P, 2C): columns 2iC .. 2(i+1)C of the table. Through the MLP,
        only those rows of W_2 are used (the hidden layer is recomputed per layer: P x mid, small)."""
        C = self.hidden
        if not self.projected:
            return self.table[:, 2 * i * C:2 * (i + 1) * C]
        h = self.down(self.embedding).tanh()                                             # (P, mid)
        rows = slice(2 * i * C, 2 * (i + 1) * C)
        return h @ self.up.weight[rows].T + self.up.bias[rows]                          # (P, 2C)

    def full_table(self):
        """The whole (P, 2 L C) table, as a plain array."""
        with no_grad():
            return xp.concatenate([self.layer(i).data for i in range(self.layers)], axis=1)

    def deploy(self):
        """Keep the MLP's output as the table and drop the embedding and the MLP; in place."""
        if self.projected:
            table = self.full_table()
            del self.embedding, self.down, self.up
            self.table = Parameter(table)
        return self


class Prefix(Module):
    """What a layer's Attention calls (its `prefix` hook): puts this layer's P keys and values in front,
    scaled per example by `gate(x)` (B,) when a gate is given (UniPELT), and P zero columns in front of
    the mask. `table` is a function giving this layer's (P, 2C), not a child module, so that the one
    encoder serving every layer is counted once."""

    def __init__(self, table, length, num_heads, gate=None):
        self.table, self.length, self.num_heads, self.gate = table, length, num_heads, gate

    def keys_values(self, x):
        """(B, H, D, P) keys and (B, H, P, D) values for a batch x (B, T, C)."""
        B, H = x.shape[0], self.num_heads
        table = self.table()                                                             # (P, 2C)
        P, C = table.shape[0], table.shape[1] // 2
        D = C // H
        if self.gate is None:
            scale = Tensor(xp.ones((B, 1, 1, 1), dtype=table.dtype))
        else:
            scale = self.gate(x).reshape(B, 1, 1, 1)
        keys = table[:, :C].reshape(1, P, H, D).transpose(0, 2, 3, 1) * scale            # (B, H, D, P)
        values = table[:, C:].reshape(1, P, H, D).transpose(0, 2, 1, 3) * scale          # (B, H, P, D)
        return keys, values

    def forward(self, x, k, v, mask_bias, first=True):
        if mask_bias is not None:                                     # (..., S) -> (..., P + S)
            zeros = xp.zeros(mask_bias.shape[:-1] + (self.length,), dtype=mask_bias.dtype)
            mask_bias = xp.concatenate([zeros, mask_bias], axis=-1)
        if first:
            keys, values = self.keys_values(x)
            k, v = concatenate([keys, k], axis=-1), concatenate([values, v], axis=-2)
        return k, v, mask_bias


def attach(transformer, config, gates=None):
    """Put a PrefixEncoder on the Transformer and a Prefix hook on every layer's attention (gated by
    gates[i] if given); set the position offset. Returns the encoder."""
    tc = transformer.config
    encoder = PrefixEncoder(config.num_virtual_tokens, tc.hidden_size, tc.num_layers, config.encoder_hidden_size,
                            config.prefix_projection, config.init)
    transformer.prefix_encoder = encoder
    for i, block in enumerate(transformer.layers):
        table = lambda i=i: encoder.layer(i)
        block.attention.prefix = Prefix(table, config.num_virtual_tokens, tc.num_heads, None if gates is None else gates[i])
    if config.shift_positions:
        transformer.position_offset = config.num_virtual_tokens
    return encoder


def check(config, transformer):
    if config.num_virtual_tokens < 1:
        raise ValueError(f"num_virtual_tokens must be at least 1, got {config.num_virtual_tokens}")
    if config.encoder_hidden_size < 1:
        raise ValueError(f"encoder_hidden_size must be at least 1, got {config.encoder_hidden_size}")
    if config.init not in INITS:
        raise ValueError(f"unknown init {config.init!r}: choose one of {INITS}")
    if config.shift_positions and config.num_virtual_tokens >= transformer.config.max_positions:
        raise ValueError(f"a prefix of {config.num_virtual_tokens} positions leaves none of the model's "
                         f"{transformer.config.max_positions}: use a shorter prefix or shift_positions=False")


def inject(model, config):
    """Freeze the model, attach a prefix to every layer (trainable) and unfreeze the task head; in place.
    Works on a SequenceClassifier (encoder) and a LanguageModel (decoder). Returns the model."""
    peft.require_fresh(model)
    transformer = peft._transformer(model)
    check(config, transformer)
    model.requires_grad_(False)
    attach(transformer, config)
    if hasattr(model, "classifier"):
        model.classifier.requires_grad_(True)
    model.peft_config, model.peft_merged = config, False
    return model


def deploy(model):
    """Replace the reparameterisation MLP by its output (the deployed prefix); in place. Exact: the
    layers read the same numbers. Returns the model."""
    peft._transformer(model).prefix_encoder.deploy()
    return model


def count(model):
    """(trainable parameters, deployed trainable parameters): deployed, the prefix is the (P, 2 L C) table
    and the MLP is gone."""
    trainable = model.num_parameters(trainable_only=True)
    encoder = peft._transformer(model).prefix_encoder
    if encoder.projected:
        trainable_encoder = encoder.num_parameters(trainable_only=True)
        return trainable, trainable - trainable_encoder + encoder.length * 2 * encoder.layers * encoder.hidden
    return trainable, trainable
