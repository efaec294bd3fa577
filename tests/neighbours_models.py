"""Small models and batches shared by the tests of tinymix.neighbours."""
import numpy as np

import tinymix
from tinymix.tensor import no_grad
from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig


def tiny_classifier(seed=0):
    """A 2-layer encoder (hidden 32, 4 heads) with a 2-label head, no dropout."""
    tinymix.manual_seed(seed)
    config = TransformerConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4,
                               intermediate_size=64, max_positions=16, dropout=0.0)
    return SequenceClassifier(Transformer(config), 2, dropout=0.0)


def minilm_shaped():
    """MiniLM's shape (hidden 384, 6 layers, 12 heads, FFN 1536), random weights: for counting."""
    tinymix.manual_seed(0)
    return SequenceClassifier(Transformer(TransformerConfig(vocab_size=30522, num_layers=6)), 2)


def tiny_batch(batch=4, length=6, seed=1):
    """Token ids and an attention mask whose second half of examples ends in two padding tokens."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), dtype=np.int64)
    mask[batch // 2:, length - 2:] = 0
    return rng.integers(1, 50, size=(batch, length)) * mask, mask


def logits(model, ids, mask):
    with no_grad():
        return model(ids, mask).numpy()
