"""Domain experts merged: one LoRA per sentiment domain (movie reviews, Amazon, NYT editorials, tweets),
merged by the mean, task arithmetic, TIES and PCB, against each expert and against one LoRA trained on all
four. The plan, fixed before any of its runs: docs/plans/domains.md.

    python3 -m tinymix compare --suite domains --lr-from docs/experiments/nlu-small --out docs/experiments/nlu-domains

Arms (the fair protocol, protocol.py; LoRA's rate from the AdaMix comparison for every arm):
  lora                      the movie-review expert (the AdaMix comparison's LoRA, the same runs);
  lora, amazon / nyt / tweets   an expert per domain: 1,000 training sentences of it, 10 epochs;
  lora, all domains         one LoRA on 1,000 sentences of each domain (4,000), 10 epochs: the multi-domain
                            model, with as many steps as the four experts together.
Then one merge job per seed (merges/seed-S): each expert's task vector is its LoRA update (alpha / r) B A at
every site plus its head minus the head it started from (every arm of a seed starts from the same head),
flattened into one vector for the whole model as the released merging code does; each operator's lambda is
chosen on the mean VALIDATION accuracy over the four domains; the merged model is tested once per domain.
"""
import statistics
from pathlib import Path

from .. import backend, data, merging, peft
from ..backend import xp
from ..store import checkpoint
from ..train import TrainConfig, build_model, evaluate, load_splits
from . import nlu, protocol, report, stats
from .protocol import Arm
from .report import Claim

TASKS = {"movies": "movie-reviews", "amazon": "amazon", "nyt": "nyt", "tweets": "tweets"}
OPERATORS = ("mean", "task-arithmetic", "ties", "pcb")
CLAIMS = {"O": "the PCB-Merging paper's order: PCB >= TIES >= task arithmetic (mean test accuracy over the domains)",
          "E": "PCB >= the plain mean of the experts (AdaMix's merge)"}


def arms():
    found = [Arm("lora", {"method": "lora"})]
    found += [Arm(f"lora, {d}", {"method": "lora", "task": TASKS[d]}, lr_from="lora") for d in data.OUT_OF_DOMAIN]
    return found + [Arm("lora, all domains", {"method": "lora", "task": "all-domains"}, lr_from="lora")]


def expert_arm(domain):
    return "lora" if domain == "movies" else f"lora, {domain}"


class Domains(nlu.MovieReviews):
    """The small regime per domain; the multi-domain arm reads 1,000 sentences of each domain."""

    def request(self, arm, lr, seed, test):
        found = super().request(arm, lr, seed, test)
        if arm.overrides.get("task") == "all-domains":
            found["config"]["train_size"] = self.train_size * len(data.DOMAINS)
        return found


def merge_request(request, folder):
    """In a worker: the merge job of one seed (the module's docstring); writes results.json."""
    folder = Path(folder)
    experts = {d: Path(f) for d, f in request["experts"].items()}
    for d, f in experts.items():
        if not (f / "merged" / "adapter_model.safetensors").is_file():
            raise ValueError(f"the {d} expert {f} has no merged/ adapter: run the comparison's arms first")
    cfg = TrainConfig(**request["config"])
    splits = {d: load_splits(TASKS[d], 0) for d in data.DOMAINS}
    backend.manual_seed(cfg.seed)                          # as train does: the head every arm starts from
    model, tokenizer = build_model(cfg, 2)
    sites = [m for _, m in model.named_modules() if isinstance(m, peft.LoRALinear)]
    start_head = (model.classifier.weight.data.copy(), model.classifier.bias.data.copy())
    base = [site.base.weight.data.copy() for site in sites]
    vectors = []
    for d in data.DOMAINS:
        peft.load_adapter(model, experts[d] / "merged")
        updates = [(site.lora_B.weight.data @ site.lora_A.weight.data) * xp.float32(site.scaling) for site in sites]
        head = [model.classifier.weight.data - start_head[0], model.classifier.bias.data - start_head[1]]
        vectors.append(xp.concatenate([u.reshape(-1) for u in updates + head]))
    for site in sites:                                     # from here on the update lives in the base weights
        site.lora_B.weight.data = xp.zeros_like(site.lora_B.weight.data)
    sizes = [u.size for u in updates] + [start_head[0].size, start_head[1].size]

    def deploy(vector):
        parts, at = [], 0
        for size in sizes:
            parts.append(vector[at:at + size])
            at += size
        for site, weight, part in zip(sites, base, parts):
            site.base.weight.data = weight + part.reshape(weight.shape)
        model.classifier.weight.data = start_head[0] + parts[-2].reshape(start_head[0].shape)
        model.classifier.bias.data = start_head[1] + parts[-1]

    def scores(part, per_example=False):
        found = {d: evaluate(model, tokenizer, splits[d][part], cfg.eval_batch_size, per_example) for d in data.DOMAINS}
        return found

    result = {"seed": cfg.seed, "cosines": {}, "experts": {}, "operators": {}}
    norms = [float(xp.sqrt((v * v).sum())) for v in vectors]
    for i in range(len(vectors)):
        for j in range(i + 1, len(vectors)):
            result["cosines"][f"{data.DOMAINS[i]}-{data.DOMAINS[j]}"] = float((vectors[i] * vectors[j]).sum()) / (norms[i] * norms[j])
    for d, vector in zip(data.DOMAINS, vectors):           # each expert on every domain's test
        deploy(vector)
        result["experts"][d] = scores("test")
    n = len(vectors)
    for operator in OPERATORS:
        def validation_score(scale):
            deploy(merging.merge(operator, vectors, scale))
            return statistics.mean(scores("validation").values())
        scale, tried = merging.choose_scale(merging.default_grid(operator, n), validation_score,
                                            prefer=merging.neutral_scale(operator, n))
        deploy(merging.merge(operator, vectors, scale))
        result["operators"][operator] = {"scale": scale, "grid": tried, "validation": max(t["score"] for t in tried),
                                         "test": scores("test")}
    checkpoint.save_json(folder / "results.json", result)


def merge_jobs(out, runs, seeds, base_request):
    """(folder, request) of the merge job of every seed whose five runs have finished."""
    jobs = []
    for seed in seeds:
        if all(seed in runs.get(a.name, {}) for a in arms()):
            experts = {d: str(protocol.run_folder(out, "final", Arm(expert_arm(d)), seed)) for d in data.DOMAINS}
            config = {**base_request(seed)["config"], "task": "movie-reviews"}
            jobs.append((Path(out) / "merges" / f"seed-{seed}", {"task": "nlu-domains-merge", "config": config,
                                                                 "experts": experts}))
    return jobs


def per_domain_multi(result):
    """{domain: test accuracy} of the multi-domain model, from its per-sentence results on the joined test
    set (movies, amazon, nyt, tweets, in that order: data.load_all_domains)."""
    rows, found, at = result["test_correct"], {}, 0
    for d in data.DOMAINS:
        size = data.TEST_SIZE if d == "movies" else data.DOMAIN_TEST_SIZE
        found[d] = rows[at:at + size].count("1") / size
        at += size
    return found


def macro(per_domain):
    return statistics.mean(per_domain[d] for d in data.DOMAINS)


def claims(merges):
    score = lambda op: {m["seed"]: 100 * macro(m["operators"][op]["test"]) for m in merges}
    rows = [Claim("O", "PCB >= TIES", "PCB", "TIES", score("pcb"), score("ties")),
            Claim("O", "TIES >= task arithmetic", "TIES", "task arithmetic", score("ties"), score("task-arithmetic")),
            Claim("E", "PCB >= the mean", "PCB", "the mean", score("pcb"), score("mean"))]
    return report.correct_for_many_claims([c.judge() for c in rows])


def table(merges, runs):
    lines = ["| model | " + " | ".join(data.DOMAINS) + " | mean over domains |", "|---|" + "---|" * (len(data.DOMAINS) + 1)]

    def row(name, per_seed):
        if not per_seed:
            return
        cells = [stats.mean_std(p[d] for p in per_seed) for d in data.DOMAINS]
        overall = stats.mean_std(macro(p) for p in per_seed)
        lines.append(f"| {name} | " + " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in cells) + f" | {overall[0]:.4f} ± {overall[1]:.4f} |")
    for d in data.DOMAINS:
        row(f"expert: {d}", [m["experts"][d] for m in merges])
    row("one LoRA on all four domains", [per_domain_multi(r) for s, r in sorted(runs.get("lora, all domains", {}).items())
                                         if s in {m["seed"] for m in merges}])
    for op in OPERATORS:
        row(f"merged: {op}", [m["operators"][op]["test"] for m in merges])
    cosines = {k: stats.mean_std(m["cosines"][k] for m in merges) for k in merges[0]["cosines"]} if merges else {}
    text = "\n".join(lines)
    if cosines:
        text += "\n\nCosine between the experts' task vectors (mean ± std over seeds): " + "; ".join(
            f"{k} {m:.3f} ± {s:.3f}" for k, (m, s) in cosines.items()) + "."
        text += "\n\nLambda chosen on validation (per seed): " + "; ".join(
            f"{op} " + ", ".join(f"{m['operators'][op]['scale']:g}" for m in merges) for op in OPERATORS[1:]) + "."
    return text


def compare_command(args):
    """`compare --suite domains`."""
    done = nlu.small_regime(args, Domains, arms(), "docs/plans/domains.md")
    task, out, regime, chosen_arms, chosen, runs = done.task, done.out, done.regime, done.arms, done.chosen, done.runs
    diverged, missing = done.diverged, done.missing
    lora = next(a for a in chosen_arms if a.name == "lora")
    jobs = merge_jobs(out, runs, range(args.seeds), lambda s: task.request(lora, chosen["lora"]["lr"], s, True))
    done = protocol.run_all(jobs, args.workers, merge_request, args.report_only, protocol._label)
    merges = sorted((r for r in done.values() if r is not None), key=lambda m: m["seed"])
    judged = claims(merges)
    text = "\n\n".join(part for part in [
        *report.opening(judged, CLAIMS, "docs/plans/domains.md", "Claims: paired differences of the mean test "
                        "accuracy over the four domains, in points, 95% CI over seeds:"),
        f"Budget: {regime['epochs']} epochs over {regime['train_size']:,} training sentences per expert (the "
        f"multi-domain LoRA: {regime['train_size']:,} of each domain); LoRA r = 4 on query and value; each operator's "
        "lambda chosen on the mean validation accuracy over the domains; TIES keeps 20%, PCB 10%. Test accuracy per "
        f"domain, mean ± std over seeds 0..{args.seeds - 1}:",
        table(merges, runs), report.tuning_table(chosen), report.waiting_claims(judged),
        report.status(chosen, chosen_arms, diverged, missing + [f"merge of seed {s}" for s in range(args.seeds)
                                                                if s not in {m['seed'] for m in merges}])] if part)
    report.write(out, text, "results_domains.md", name="domains.md")
    checkpoint.save_json(out / "domains.json", {"regime": regime, "chosen": chosen, "claims": judged, "seeds": args.seeds})
    print(text)
