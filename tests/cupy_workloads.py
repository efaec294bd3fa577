"""Small runs of tinymix's real work, on whichever backend is set, marked where each step ends: for the
tests that count their host transfers on the CuPy stand-in (test_cupy_transfers.py) and that check
their calls against CuPy's namespace (test_cupy_namespace.py)."""
import contextlib

from cupy_contract import LEDGER
from tinymix import adamix, backend, data, decode, peft
from tinymix import functional as F
from tinymix import train as train_module
from tinymix.optim import AdamW, clip_grad_norm
from tinymix.tensor import no_grad
from tinymix.transformer import LanguageModel, SequenceClassifier, Transformer, TransformerConfig


@contextlib.contextmanager
def marking(owner, name, marks):
    """Append (transfers, uploads) counted so far to `marks` each time owner.name() returns."""
    real = getattr(owner, name)

    def marked(*args, **kwargs):
        result = real(*args, **kwargs)
        marks.append((LEDGER.total(), sum(LEDGER.uploads.values())))
        return result
    setattr(owner, name, marked)
    try:
        yield marks
    finally:
        setattr(owner, name, real)


def differences(marks, start=(0, 0)):
    """Per interval between marks: (transfers, uploads)."""
    points = [start] + list(marks)
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(points, points[1:])]


# ---- classification: train.py's loop, and merged inference ----------------------------------------------

def tiny_splits(n_train=48, n_eval=16):
    """The first movie-review sentences of each split (the loop does not care how many)."""
    full = data.load_movie_reviews()
    sizes = {"train": n_train, "validation": n_eval, "test": n_eval}
    return {name: data.Split(full[name].texts[:n], full[name].labels[:n]) for name, n in sizes.items()}


def train_config(**overrides):
    """train.py's defaults on "random-tiny" (MiniLM's tokenizer, a 2-layer hidden-32 encoder)."""
    settings = dict(model="random-tiny", epochs=1, batch_size=8, progress=False, eval_batch_size=16)
    return train_module.TrainConfig(**{**settings, **overrides})


def train_marking_steps(cfg, splits):
    """train(cfg, splits), and (transfers, uploads) counted as each optimizer step ends."""
    with marking(AdamW, "step", []) as marks:
        result = train_module.train(cfg, splits)
    return result, marks


def tiny_classifier(method=None, seed=0):
    backend.manual_seed(seed)
    config = TransformerConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                               max_positions=32)
    method = method or peft.AdaMixConfig(module="adapter", adapter=peft.AdapterConfig(8))
    return peft.get_peft_model(SequenceClassifier(Transformer(config), 2), method)


def host_batch(batch=4, length=12, vocab=100, seed=1):
    rng = backend.host_generator(seed)
    ids = rng.integers(1, vocab, size=(batch, length))
    mask = (backend.host_arange(length)[None, :] < rng.integers(4, length + 1, size=(batch, 1))).astype("int64")
    return ids * mask, mask, rng.integers(0, 2, size=batch)


def bare_training_step(model, optimizer, batch, low_memory=False):
    """One step exactly as train.py takes it, without its loop (no logging)."""
    ids, mask, labels = batch
    model.train()
    optimizer.zero_grad()
    loss, _, _ = adamix.two_pass_backward(lambda: model(ids, mask), lambda z: F.cross_entropy(z, labels), 1.0,
                                          low_memory=low_memory)
    clip_grad_norm(model.trainable_parameters(), 1.0, as_float=False)
    optimizer.step()
    return loss


# ---- decoding ------------------------------------------------------------------------------------------

def tiny_decoder(seed=0, vocab=40):
    """A random decoder with peaked next-token distributions (scaled weights), so outputs are long."""
    backend.manual_seed(seed)
    config = TransformerConfig(kind="decoder", vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=4,
                               intermediate_size=64, max_positions=24, dropout=0.1, layer_norm_eps=1e-5,
                               gelu_approximate=True)
    model = LanguageModel(Transformer(config))
    for p in model.parameters():
        p.data *= 8.0
    return model


def decode_marking_steps(search, *args, **kwargs):
    """decode.<search>(*args), and (transfers, uploads) counted before it, and as the decoder's start
    and each of its token steps return."""
    marks = [(LEDGER.total(), sum(LEDGER.uploads.values()))]
    with marking(decode._Stepper, "start", marks), marking(decode._Stepper, "step", marks):
        result = search(*args, **kwargs)
    return result, marks


def inference_and_decoding():
    """Merged inference, evaluation and both decoders, once (for the namespace check)."""
    model = peft.merge(tiny_classifier()).eval()
    with no_grad():
        model(*host_batch()[:2])
    decoder = tiny_decoder()
    decode.beam_search(decoder, [1, 2, 3], end_id=0, beam_width=3, max_new_tokens=6, no_repeat_ngram=2)
    decode.greedy(decoder, [[1, 2], [3, 4]], end_id=0, max_new_tokens=6)
