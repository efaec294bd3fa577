"""What AdaMix costs on the real MiniLM: parameters, and inference time after merging.

    python3 -m tinymix.bench_peft [--repeats 15] [--batches 2]

1. Parameters (adamix.md section 8): trainable while training, trainable after merging (the number
   the paper reports), and both as a % of the frozen backbone, for adapter, LoRA, AdaMix-adapter,
   AdaMix-LoRA, BitFit and full fine-tuning, with a 2-label head.
2. Inference time (eval, no graph) on batches of 32 movie-review sentences at their natural length
   (each batch padded to its longest sentence):
   - a MERGED AdaMix-adapter model / a single-adapter model: merging should leave ~1.0;
   - AdaMix-adapter "random" routing (an expert per example) / "average" (the experts' mean).
   The variants run interleaved, batch by batch in a fresh random order, after a warm-up round, so
   a busy machine slows them alike; each ratio is the median over rounds of the per-round ratio.
"""
import argparse
import statistics
import time

from . import backend, peft
from .data import load_movie_reviews
from .pretrained import load_pretrained
from .tensor import no_grad
from .transformer import SequenceClassifier, Transformer

NUM_LABELS = 2
BOTTLENECK, RANK, NUM_EXPERTS = 16, 4, 4


def method_configs():
    """The methods of the parameter table, with the paper's defaults (sharing the up-projection / B)."""
    return {
        f"adapter (r={BOTTLENECK})": peft.AdapterConfig(bottleneck=BOTTLENECK),
        f"LoRA (r={RANK}, query+value)": peft.LoRAConfig(rank=RANK),
        f"AdaMix-adapter (M={NUM_EXPERTS}, r={BOTTLENECK})":
            peft.AdaMixConfig(module="adapter", num_experts=NUM_EXPERTS,
                              adapter=peft.AdapterConfig(bottleneck=BOTTLENECK)),
        f"AdaMix-LoRA (M={NUM_EXPERTS}, r={RANK})":
            peft.AdaMixConfig(module="lora", num_experts=NUM_EXPERTS, lora=peft.LoRAConfig(rank=RANK)),
        "BitFit": peft.BitFitConfig(),
        "full fine-tuning": peft.FullFineTuneConfig(),
    }


def classifier(backbone_config, weights, peft_config):
    """A fresh 2-label classifier on a copy of the pretrained weights, with `peft_config` injected."""
    transformer = Transformer(backbone_config)
    transformer.load_state_dict(weights)
    return peft.get_peft_model(SequenceClassifier(transformer, NUM_LABELS), peft_config)


# ---- 1. parameters ---------------------------------------------------------------------------------

def parameter_rows(backbone_config, weights):
    """[(method, trainable while training, trainable after merging)]."""
    rows = []
    for name, config in method_configs().items():
        model = classifier(backbone_config, weights, config)
        training = model.num_parameters(trainable_only=True)
        peft.merge(model)
        rows.append((name, training, model.num_parameters(trainable_only=True)))
    return rows


def parameter_table(rows, backbone):
    lines = [f"Trainable parameters on MiniLM-L6 ({backbone:,d} backbone parameters), {NUM_LABELS}-label head",
             "",
             "| method | trainable (training) | % of backbone | trainable (merged) | % of backbone |",
             "|---|---:|---:|---:|---:|"]
    for name, training, merged in rows:
        lines.append(f"| {name} | {training:,d} | {100 * training / backbone:.3f}% "
                     f"| {merged:,d} | {100 * merged / backbone:.3f}% |")
    return "\n".join(lines)


# ---- 2. inference time -------------------------------------------------------------------------------

def timing_batches(tokenizer, num_batches, batch_size=32):
    """Tokenized validation batches, each padded only to its own longest sentence."""
    texts = load_movie_reviews()["validation"].texts
    return [tokenizer(texts[i * batch_size:(i + 1) * batch_size]) for i in range(num_batches)]


def timed_forward(model, ids, mask):
    """Seconds for one eval forward (`.numpy()` waits for a GPU to finish)."""
    start = time.perf_counter()
    with no_grad():
        model(ids, mask).numpy()
    return time.perf_counter() - start


def timing_variants(backbone_config, weights):
    adamix_config = peft.AdaMixConfig(module="adapter", num_experts=NUM_EXPERTS,
                                      adapter=peft.AdapterConfig(bottleneck=BOTTLENECK))
    single = classifier(backbone_config, weights, peft.AdapterConfig(bottleneck=BOTTLENECK))
    merged = peft.merge(classifier(backbone_config, weights, adamix_config))
    average = classifier(backbone_config, weights, adamix_config)
    random = classifier(backbone_config, weights,
                        peft.AdaMixConfig(module="adapter", num_experts=NUM_EXPERTS, inference="random",
                                          adapter=peft.AdapterConfig(bottleneck=BOTTLENECK)))
    variants = {"single adapter": single, "AdaMix merged": merged,
                "AdaMix average": average, "AdaMix random": random}
    return {name: model.eval() for name, model in variants.items()}


def time_variants(variants, batches, repeats):
    """{variant: [seconds per round]}: a round runs every batch through every variant, the variants
    of one batch back to back in a fresh random order, so that paired timings see the same load.
    One warm-up round first."""
    for model in variants.values():
        for ids, mask in batches:
            timed_forward(model, ids, mask)
    order_rng = backend.host_generator(0)
    names = list(variants)
    seconds = {name: [] for name in names}
    for _ in range(repeats):
        total = dict.fromkeys(names, 0.0)
        for ids, mask in batches:
            for i in order_rng.permutation(len(names)):
                total[names[i]] += timed_forward(variants[names[i]], ids, mask)
        for name in names:
            seconds[name].append(total[name])
    return seconds


def ratio(seconds, numerator, denominator):
    """Median over rounds of the per-round ratio, and the spread (min, max) of those ratios."""
    per_round = [a / b for a, b in zip(seconds[numerator], seconds[denominator])]
    return statistics.median(per_round), min(per_round), max(per_round)


def timing_table(seconds, num_batches, num_sentences):
    lines = [f"Eval forward time, {num_batches} batches of 32 movie-review sentences ({num_sentences} in all), "
             f"median of {len(next(iter(seconds.values())))} interleaved rounds",
             "",
             "| variant | median (ms) | min (ms) |",
             "|---|---:|---:|"]
    for name, values in seconds.items():
        lines.append(f"| {name} | {1000 * statistics.median(values):.1f} | {1000 * min(values):.1f} |")
    lines += ["", "| ratio | median per-round ratio | range over rounds |", "|---|---:|---:|"]
    for numerator, denominator in (("AdaMix merged", "single adapter"), ("AdaMix random", "AdaMix average"),
                                   ("AdaMix average", "single adapter")):
        middle, low, high = ratio(seconds, numerator, denominator)
        lines.append(f"| {numerator} / {denominator} | {middle:.3f} | {low:.3f} - {high:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per variant")
    parser.add_argument("--batches", type=int, default=2, help="batches of 32 sentences per round")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batches < 1:
        parser.error("--repeats and --batches must be at least 1")

    backbone, tokenizer = load_pretrained("minilm-l6")
    weights = backbone.state_dict()
    backbone_size = backbone.num_parameters()
    backend.manual_seed(0)
    print(f"backend: {backend.name}\n")
    print(parameter_table(parameter_rows(backbone.config, weights), backbone_size))
    print()
    batches = timing_batches(tokenizer, args.batches)
    seconds = time_variants(timing_variants(backbone.config, weights), batches, args.repeats)
    print(timing_table(seconds, args.batches, sum(len(ids) for ids, _ in batches)))


if __name__ == "__main__":
    main()
