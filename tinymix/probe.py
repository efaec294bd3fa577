"""The baseline every fine-tuning method must beat: a linear probe on frozen sentence embeddings.

MiniLM's mean-pooled embeddings (pretrained.embed) are computed once per split and cached in the asset
cache; a logistic-regression head is then trained on them with tinymix's own autograd and AdamW.
"""
import hashlib

from .store import assets, checkpoint
from . import backend
from . import functional as F
from .backend import xp
from .nn import Linear
from .optim import AdamW
from .pretrained import embed
from .tensor import Tensor, no_grad


def cached_embeddings(model_name, model, tokenizer, texts):
    """embed(...) of `texts`, cached on disk under the asset cache, keyed by model and texts."""
    key = hashlib.sha256("\n".join([model_name, str(tokenizer.max_length)] + list(texts)).encode()).hexdigest()[:16]
    path = assets.cache_dir() / "embeddings" / f"{model_name}-{key}.safetensors"
    if path.is_file():
        return backend.from_numpy(checkpoint.load_arrays(path)["embeddings"])
    vectors = embed(model, tokenizer, list(texts))
    checkpoint.save_arrays(path, {"embeddings": vectors})
    return vectors


def linear_probe(train_x, train_y, test_x, test_y, steps=300, lr=1e-2, weight_decay=1e-4):
    """Train logistic regression on standardised features (full batch); return test accuracy."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    standardise = lambda x: Tensor((x - mean) / std)
    x, y = standardise(train_x), backend.from_numpy(backend.to_numpy(train_y).astype("int64"))
    num_labels = int(max(train_y)) + 1
    head = Linear(x.shape[1], num_labels)
    optimizer = AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(head(x), y).backward()
        optimizer.step()
    with no_grad():
        predictions = head(standardise(test_x)).data.argmax(axis=-1)
    return float((predictions == backend.from_numpy(backend.to_numpy(test_y))).mean())
