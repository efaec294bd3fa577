"""Model Surgery (Wang et al., NAACL 2025): change one behaviour of a language model by editing a few
rows of its FFNs along a probe's direction. No gradient ever reaches the model.

1. PROBE. A 2-class linear head on the mean of the model's final hidden states over a text's tokens
   (pooled_states), trained to tell texts with the behaviour (class 1) from texts without (train_probe).
   Its class-1 row v (in the hidden space, d numbers) is the behaviour's direction.
2. REGION. Every FFN input row w (layers.N.intermediate.weight[j], d numbers: it reads the normalised
   residual stream, and its activation is GELU(w . x + b)) is scored by -cos(w, v); the rows with the
   highest scores over ALL layers are chosen (select_rows): the neurons most opposed to the behaviour.
3. SURGERY. Each chosen row gets w <- w + alpha v (operate). The official code adds alpha = 1 times the raw
   probe row to LLaMA's gate projection; here alpha is given by a ratio r, ||alpha v|| = r x the mean norm of
   the chosen rows (alpha_for), since an absolute alpha does not carry from d = 4,096 to d = 128.

    states = pooled_states(model, tokenizer, texts)                    # (n, d)
    v = train_probe(states, labels, seed=0)["direction"]
    rows = select_rows(model, v, share=SHARE)                          # [(layer, row), ...]
    with operated(model, rows, alpha_for(model, rows, v, r=1.0) * v):  # edited inside the block
        ...

Deviations: the tiny GPT's FFNs have no gate, so the input matrix's rows are edited (the paper edits
LLaMA's gate_proj); alpha is relative (above); the share of rows is the official count's share.
"""
import contextlib

from . import backend
from . import functional as F
from .backend import xp
from .nn import Linear
from .optim import AdamW
from .tensor import Tensor, no_grad
from .transformer import mean_pool

SHARE = 16384 / (32 * 11008)     # the official code edits 4 x 4,096 of LLaMA-2-7B's 32 x 11,008 gate rows


def pooled_states(model, tokenizer, texts, batch_size=64):
    """(n, d): the mean of the final hidden states over each text's tokens (padding excluded). `model` is a
    LanguageModel (its .transformer) or a Transformer."""
    transformer = getattr(model, "transformer", model)
    transformer.eval()
    found = []
    with no_grad():
        for start in range(0, len(texts), batch_size):
            ids, mask = tokenizer(texts[start:start + batch_size])
            found.append(mean_pool(transformer(ids, mask).data, mask))             # (B, d)
    return xp.concatenate(found)


def train_probe(states, labels, seed=0, steps=300, lr=1e-2):
    """A 2-class linear head trained on (states, labels) by full-batch AdamW with cross-entropy.
    Returns {"direction": its class-1 row (d,), "head": the Linear, "accuracy": on the training states}."""
    labels = xp.asarray(labels, dtype=xp.int64)
    if states.ndim != 2 or len(states) != len(labels) or set(backend.to_numpy(labels).tolist()) != {0, 1}:
        raise ValueError("a probe needs states (n, d) and n labels holding both classes 0 and 1")
    backend.manual_seed(seed)
    head = Linear(states.shape[1], 2)
    optimizer = AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    x = Tensor(xp.asarray(states, dtype=xp.float32))
    for _ in range(steps):
        loss = F.cross_entropy(head(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"direction": head.weight.data[1].copy(), "head": head, "accuracy": probe_accuracy(head, states, labels)}


def probe_accuracy(head, states, labels):
    with no_grad():
        predicted = head(Tensor(xp.asarray(states, dtype=xp.float32))).data.argmax(axis=-1)
    return float((predicted == xp.asarray(labels)).mean())


def ffn_rows(model):
    """[the FFN input Linear of each layer] of a LanguageModel or Transformer."""
    transformer = getattr(model, "transformer", model)
    return [layer.intermediate for layer in transformer.layers]


def select_rows(model, direction, share=SHARE, count=None):
    """The (layer, row) pairs of the `count` (default: round(share x all rows)) FFN input rows with the
    highest -cos(row, direction), over every layer at once, best first."""
    v = xp.asarray(direction, dtype=xp.float32)
    scored = []
    for layer, linear in enumerate(ffn_rows(model)):
        W = linear.weight.data                                                     # (rows, d)
        cosine = (W @ v) / (xp.sqrt((W * W).sum(axis=1)) * xp.sqrt((v * v).sum()) + xp.float32(1e-12))
        scored += [(-float(c), layer, row) for row, c in enumerate(backend.to_numpy(cosine).tolist())]
    total = len(scored)
    count = round(share * total) if count is None else count
    if not 1 <= count <= total:
        raise ValueError(f"select {count} rows: choose between 1 and the model's {total} FFN rows")
    scored.sort(key=lambda item: (-item[0], item[1], item[2]))
    return [(layer, row) for _, layer, row in scored[:count]]


def alpha_for(model, rows, direction, r=1.0):
    """alpha such that ||alpha v|| = r x the mean norm of the chosen rows."""
    linears = ffn_rows(model)
    norms = [float(xp.sqrt((linears[layer].weight.data[row] ** 2).sum())) for layer, row in rows]
    return r * (sum(norms) / len(norms)) / float(xp.sqrt((xp.asarray(direction) ** 2).sum()))


def operate(model, rows, step):
    """In place: row += step (a (d,) array: alpha v) for every (layer, row). Returns the rows' old values."""
    linears = ffn_rows(model)
    step = xp.asarray(step, dtype=xp.float32)
    old = [(layer, row, linears[layer].weight.data[row].copy()) for layer, row in rows]
    for layer, row in rows:
        linears[layer].weight.data[row] = linears[layer].weight.data[row] + step
    return old


@contextlib.contextmanager
def operated(model, rows, step):
    """The model with the surgery inside the block, its rows back afterwards (bit for bit)."""
    old = operate(model, rows, step)
    try:
        yield model
    finally:
        linears = ffn_rows(model)
        for layer, row, value in old:
            linears[layer].weight.data[row] = value
