"""How fast is MiniLM's forward pass in tinymix, and how close is that to the machine's matmul speed?

    python -m tinymix.bench_model [--sentences 256] [--repeats 3]

Forward FLOPs of a batch of B sentences padded to T tokens (a multiply-add counts as 2):
    linear    = 2 * B * T * (weights of every Linear: 4 C^2 + 2 C I per layer)
    attention = L * 2 * (2 * B * T^2 * C)        scores q k^T and context weights v, all heads
Embedding look-ups, layer norms, GELU and softmax are left out: they are memory-bound, not FLOPs.
The ceiling is one plain matmul of the size of the FFN's first layer, (32 T, C) @ (C, I), timed in
the same run; the ratio says how much of it the whole model reaches.
"""
import argparse
import time

from . import backend
from .backend import xp
from .nn import Linear
from .tensor import no_grad


def _wait(array):
    """Read one element back: on a GPU this waits for all queued work, so timings are honest."""
    return float(array.reshape(-1)[0])


def forward_flops(model, padded_lengths, batch_size):
    """FLOPs of the forward passes over batches of `batch_size` sentences padded to these lengths."""
    linear_weights = sum(module.weight.size for _, module in model.named_modules()
                         if isinstance(module, Linear))
    C, L = model.config.hidden_size, model.config.num_layers
    total = 0
    for T in padded_lengths:
        total += 2 * batch_size * T * linear_weights
        total += L * 2 * (2 * batch_size * T * T * C)
    return total


def matmul_gflops(rows, inner, cols, repeats=3):
    """GFLOP/s of the best of `repeats` timings of a float32 (rows, inner) @ (inner, cols) matmul."""
    rng = backend.host_generator(0)
    a = backend.from_numpy(rng.standard_normal((rows, inner)).astype("float32"))
    b = backend.from_numpy(rng.standard_normal((inner, cols)).astype("float32"))
    _wait(a @ b)  # warm-up: thread pools, GPU kernels
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        _wait(a @ b)
        best = min(best, time.perf_counter() - start)
    return 2 * rows * inner * cols / best / 1e9


def minilm_throughput(model, tokenizer, texts, batch_size=32, repeats=3):
    """Forward throughput of `model` (eval mode, no graph) on `texts` in batches of `batch_size`,
    each padded to its own longest sentence. Texts are tokenized before the clock starts; the time
    of a pass is the best of `repeats` passes over all batches, after one warm-up batch.
    Returns a dict of the measurements (see `main` for what each means)."""
    if len(texts) == 0:
        raise ValueError("no texts to measure with: the list is empty")
    batches = [tokenizer(texts[start:start + batch_size]) for start in range(0, len(texts), batch_size)]
    lengths = [ids.shape[1] for ids, _ in batches]
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            _wait(model(*batches[0]).data)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                for ids, mask in batches:
                    hidden = model(ids, mask)
                _wait(hidden.data)
                best = min(best, time.perf_counter() - start)
    finally:
        model.train(was_training)

    flops = forward_flops(model, lengths, batch_size)
    mean_length = sum(lengths) / len(lengths)
    T = round(mean_length)
    C, I = model.config.hidden_size, model.config.intermediate_size
    model_gflops = flops / best / 1e9
    reference = matmul_gflops(batch_size * T, C, I, repeats)
    return {
        "backend": backend.name,
        "sentences": len(texts),
        "batches": len(batches),
        "mean_padded_length": mean_length,
        "seconds": best,
        "sentences_per_second": len(texts) / best,
        "gflop_per_pass": flops / 1e9,
        "model_gflops": model_gflops,
        "matmul_shape": f"({batch_size * T}, {C}) @ ({C}, {I})",
        "matmul_gflops": reference,
        "ratio": model_gflops / reference,
    }


def benchmark_texts(count):
    """`count` natural-length sentences: movie reviews in their shuffled training order when the
    data module can read them, else the parity reference's six sentences repeated."""
    try:
        from .data import load_movie_reviews
        return load_movie_reviews()["train"].texts[:count]
    except ImportError:
        from pathlib import Path
        reference = Path(__file__).resolve().parent.parent / "tests" / "reference" / "minilm_reference.npz"
        with xp.load(reference, allow_pickle=False) as file:
            six = [str(s) for s in backend.to_numpy(file["sentences"])]
        return (six * (count // len(six) + 1))[:count]


def main(argv=None):
    from .pretrained import load_pretrained

    parser = argparse.ArgumentParser(prog="python -m tinymix.bench_model", description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    model, tokenizer = load_pretrained("minilm-l6")
    texts = benchmark_texts(args.sentences)
    r = minilm_throughput(model, tokenizer, texts, args.batch_size, args.repeats)
    print(f"MiniLM-L6 forward, backend {r['backend']}: {r['sentences']} sentences in {r['batches']} batches "
          f"of {args.batch_size}, mean padded length {r['mean_padded_length']:.1f} tokens")
    print(f"  best pass        {r['seconds']:.3f} s  ({r['gflop_per_pass']:.1f} GFLOP)")
    print(f"  throughput       {r['sentences_per_second']:.1f} sentences/s")
    print(f"  model            {r['model_gflops']:.1f} GFLOP/s")
    print(f"  plain matmul     {r['matmul_gflops']:.1f} GFLOP/s  {r['matmul_shape']}")
    print(f"  model / matmul   {r['ratio']:.2f}")
    return r


if __name__ == "__main__":
    main()
