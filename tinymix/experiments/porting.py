"""When the base model changes: PortLLM's training-free patch and MUSCLE's negative flips, on the tiny GPT.
The plan, fixed before any of its runs: docs/plans/porting.md.

    python3 -m tinymix pretrain-gpt --continue-from data/tiny_gpt --steps 600 --lr 0.002 --seed 1 \\
        --e2e-share 0.8 --out data/tiny_gpt_v2                                # the evolved base, v2
    python3 -m tinymix compare --task e2e --suite porting --lr-from docs/experiments/e2e --out docs/experiments/e2e-porting

v1 is the shipped tiny GPT (data/tiny_gpt); v2 is v1 pretrained further on more restaurant text, with the
same tokenizer (pretrain-gpt --continue-from). Arms, each on the e2e task under the fair protocol:
  lora, adamix-lora       trained on v1; after the run, their patch (the merged adapter: LoRA's B A, AdaMix-
                          LoRA's averaged experts) is ALSO deployed on v2 without any training (PortLLM),
                          and v2 alone (no patch) is decoded too;
  lora, on v2             LoRA trained on v2 at LoRA's rate: what re-training after the update gives.
Every decode (v1's own, ported, v2 alone, v2's own) records per test MR whether all its slots were
realised, so negative flips (right before the update, wrong after: MUSCLE's NFR) are counted per seed.
Each run saves its patch (patch.safetensors: the merged adapter's LoRA factors, a few KB) so that the
PortLLM lemma, "the patch learnt on v2 is close to the one learnt on v1", is measured from the files.
"""
import math
import shutil
from dataclasses import replace
from pathlib import Path

from .. import backend, e2e, peft
from ..backend import to_numpy
from ..e2e import finetune
from ..e2e.finetune import NLGConfig
from ..store import checkpoint
from . import e2e as e2e_experiment
from . import protocol, report, stats
from .protocol import Arm
from .report import Claim

V2 = "data/tiny_gpt_v2"
MARGIN = 1.0          # "comparable": within one BLEU point (as the e2e neighbours' claims)
KD_WEIGHT = 1.0       # the compatibility adapter's distillation term, beside the task loss (see compatibility_loss)
CLAIMS = {"P": "PortLLM: v1's patch on v2, with no training, ~ LoRA re-trained on v2, and > v2 alone",
          "A": "AdaMix's averaged patch ports at least as well as LoRA's (BLEU kept after the update)",
          "F": "MUSCLE's premise: re-training after the update flips right outputs to wrong; porting flips fewer",
          "C": "MUSCLE: a compatibility adapter (distilled from the old task model where it is right) flips fewer "
               "than plain re-training, and keeps its BLEU (within 1 point)"}
COMPATIBLE = "lora, on v2, compatible"


def arms(v2=V2):
    return [Arm("lora", {"method": "lora"}), Arm("adamix-lora", {"method": "adamix-lora"}),
            Arm("lora, on v2", {"method": "lora", "model": v2}, lr_from="lora"),
            Arm(COMPATIBLE, {"method": "lora", "model": v2}, lr_from="lora")]


class Porting(e2e_experiment.DataToText):
    """The e2e task whose final runs keep their patch and, on v1, are ported to v2."""
    name = "e2e-porting"

    def __init__(self, base, v2=V2, out=None):
        super().__init__(base)
        self.v2, self.out = v2, out

    def request(self, arm, lr, seed, test):
        found = {**super().request(arm, lr, seed, test), "task": self.name}
        if test and "model" not in arm.overrides:
            found["port_to"] = {"model": self.v2, "pretrained_weights": finetune.pretrained_weights_id(self.v2)}
        if arm.name == COMPATIBLE:      # its teachers: the same seed's LoRA on v1 and LoRA on v2
            found["compatible_with"] = {"old": str(protocol.run_folder(self.out, "final", Arm("lora"), seed)),
                                        "new": str(protocol.run_folder(self.out, "final", Arm("lora, on v2"), seed)),
                                        "kd_weight": KD_WEIGHT}
        return found

    @staticmethod
    def run(request, folder):
        run_request(request, folder)


def slots_right(examples, texts):
    """"0110...": per MR, 1 where the text realises every slot of the MR (none missing or wrong)."""
    return "".join(str(int(e2e.slot_error_rate([ex.mr], [text])["rate"] == 0)) for ex, text in zip(examples, texts))


def decode_on(cfg, adapter, splits):
    """BLEU, slot errors and per-MR slot correctness of `adapter` (a run's merged/ folder; None: no patch)
    deployed on cfg.model, folded into its weights as the run's own model was; validation and test."""
    model, tokenizer = deployed(cfg, adapter)
    encoder = finetune.Encoder(tokenizer, model.transformer.config.max_positions)
    found = {}
    for part in ("validation", "test"):
        texts = [encoder.text(d.ids) for d in finetune.generate(model, encoder, [ex.mr for ex in splits[part]], cfg)]
        scores = finetune.score(splits[part], texts)
        found[part] = {"bleu": scores["bleu"], "slot_error_rate": scores["slot_error_rate"]}
        if part == "test":
            found[part].update(slots_right=slots_right(splits[part], texts), outputs=texts)
    return found


def run_request(request, folder):
    """In the worker: the e2e run itself, then its patch kept and (on v1) ported to v2."""
    folder = Path(folder)
    port = request.get("port_to")
    if port and finetune.pretrained_weights_id(port["model"]) != port["pretrained_weights"]:
        raise ValueError(f"the {port['model']} weights changed since this run was asked for")
    results_file = folder / "results.json"
    if request.get("compatible_with"):
        compatible_run(request, folder)
    else:
        e2e_experiment.run_request({**request, "task": "e2e"}, folder)      # writes results.json
    results = checkpoint.load_json(results_file)
    if "diverged" in results or not request["config"]["test"]:       # a tuning run: validation BLEU is all
        return
    results_file.rename(folder / "results.partial.json")     # results.json again only once all is done
    cfg = NLGConfig(**request["config"], progress=False)
    splits = e2e.make_splits(cfg.train_size, cfg.validation_size, cfg.test_size, cfg.data_seed)
    results["slots_right"] = slots_right(splits["test"], [s["output"] for s in results["samples"]])
    shutil.copyfile(folder / "merged" / "adapter_model.safetensors", folder / "patch.safetensors")
    if port:
        v2 = replace(cfg, model=port["model"])
        if (Path(finetune.gpt_folder(cfg.model)) / "tokenizer.json").read_bytes() != \
                (Path(finetune.gpt_folder(v2.model)) / "tokenizer.json").read_bytes():
            raise ValueError(f"{v2.model} has another tokenizer than {cfg.model}: a patch ports only to a base with "
                             "the same vocabulary (continue pretraining with pretrain-gpt --continue-from)")
        results["ported"] = decode_on(v2, folder / "merged", splits)
        results["v2_alone"] = decode_on(v2, None, splits)
    checkpoint.save_json(results_file, results)
    (folder / "results.partial.json").unlink()


def deployed(cfg, adapter):
    """(model, tokenizer): cfg.model with `adapter` (a saved merged adapter folder; None: no patch) folded
    into its weights, as a run deploys its own."""
    model, tokenizer = finetune.build_model(cfg)          # a fresh LoRA's B is 0: the base alone
    if adapter is not None:
        peft.merge(model)                                 # the saved adapter holds merged mixtures
        peft.load_adapter(model, adapter)
    peft.merge(model, fold_lora=True)
    return model, tokenizer


def task_model(base_cfg, run_folder):
    """A finished run's deployed model, frozen: its base with its merged adapter folded in."""
    model, _ = deployed(base_cfg, Path(run_folder) / "merged")
    model.requires_grad_(False)
    model.eval()
    return model


def compatibility_loss(old, new, weight=KD_WEIGHT):
    """MUSCLE's masked distillation, for finetune.train(extra_loss=...): at each target token the teacher is
    the OLD task model where its most likely token is the reference token (stay compatible where it was
    right), else the NEW task model (keep its gains); the term is weight x KL(teacher || student), averaged
    over the target tokens. (The paper's exact mask, weights and initialisation are not public; these are
    this project's choices, stated in docs/plans/porting.md.)"""
    from ..backend import xp
    from .. import functional as F
    from ..tensor import no_grad

    def per_batch(inputs, targets, picked):
        with no_grad():
            old_logits = finetune.target_logits(old, inputs, targets).data
            new_logits = finetune.target_logits(new, inputs, targets).data
        right = (old_logits.argmax(axis=-1) == xp.asarray(picked))[:, None]
        teacher = xp.where(right, old_logits, new_logits)
        teacher = teacher - teacher.max(axis=-1, keepdims=True)
        log_p = teacher - xp.log(xp.exp(teacher).sum(axis=-1, keepdims=True))
        p = xp.exp(log_p)
        entropy_part = float((p * log_p).sum(axis=-1).mean())
        return lambda logits: (F.log_softmax(logits) * (-p / len(p))).sum() * weight + entropy_part * weight
    return per_batch


def compatible_run(request, folder):
    """The compatibility adapter: LoRA on v2 trained with the task loss plus compatibility_loss towards the
    same seed's LoRA on v1 (old) and LoRA on v2 (new), both finished runs of this comparison."""
    teachers = request["compatible_with"]
    for key in ("old", "new"):
        if not (Path(teachers[key]) / "results.json").is_file():
            raise ValueError(f"the compatibility adapter needs the finished run {teachers[key]} first: run the "
                             "comparison's lora arms (they come first in its order) and try again")
    cfg = NLGConfig(**request["config"], out=str(folder), progress=False)
    if finetune.pretrained_weights_id(cfg.model) != request["pretrained_weights"]:
        raise ValueError(f"the {cfg.model} weights changed since this run was asked for")
    old_cfg = replace(cfg, model=checkpoint.load_json(Path(teachers["old"]) / "request.json")["config"]["model"], out="")
    old, new = task_model(old_cfg, teachers["old"]), task_model(replace(cfg, out=""), teachers["new"])
    finetune.train(cfg, extra_loss=compatibility_loss(old, new, teachers["kd_weight"]))


# ---- the analysis -------------------------------------------------------------------------------------

def patch_update(path, scaling):
    """{site: scaling B A} of a saved LoRA patch (an adapter_model.safetensors or a run's patch.safetensors),
    scaling = alpha / r."""
    arrays = checkpoint.load_arrays(path)
    sites = sorted({k.rsplit(".lora_A", 1)[0] for k in arrays if ".lora_A" in k})
    return {s: to_numpy(arrays[f"{s}.lora_B.weight"]) @ to_numpy(arrays[f"{s}.lora_A.weight"]) * scaling
            for s in sites}


def lemma(out, seeds):
    """Per seed, ||dW_v2 - dW_v1|| / ||dW_v1|| and their cosine, over every site at once (LoRA on v1 vs LoRA on
    v2, the same seed: the same data order and the same start of A); None where a patch file is missing."""
    found = {}
    for seed in seeds:
        folders = [protocol.run_folder(out, "final", Arm(name), seed) for name in ("lora", "lora, on v2")]
        if not all((f / "patch.safetensors").is_file() for f in folders):
            continue
        config = checkpoint.load_json(folders[0] / "request.json")["config"]
        v1, v2 = (patch_update(f / "patch.safetensors", config["lora_alpha"] / config["lora_rank"]) for f in folders)
        found[seed] = patch_distance(v1, v2)
    return found


def patch_distance(first, second):
    """{"relative_difference": ||second - first|| / ||first||, "cosine": ...} of two patches ({site: dW}),
    over every site at once (float64)."""
    flat = lambda update: backend.host.concatenate([update[s].reshape(-1).astype("float64") for s in sorted(update)])
    a, b = flat(first), flat(second)
    norm = lambda v: math.sqrt(float((v * v).sum()))
    return {"relative_difference": norm(b - a) / norm(a), "cosine": float((a * b).sum()) / (norm(a) * norm(b))}


def flips(before, after):
    """MUSCLE's negative flip rate: the share of MRs right before and wrong after."""
    return sum(b == "1" and a == "0" for b, a in zip(before, after)) / len(before)


def scores(runs):
    """{name: {seed: BLEU}} for every quantity the claims compare."""
    bleu = lambda arm, key=None: {s: (r[key]["test"]["bleu"] if key else r["bleu"]) for s, r in runs.get(arm, {}).items()
                                  if key is None or key in r}
    found = {"v1 + LoRA": bleu("lora"), "v2 + v1's LoRA patch": bleu("lora", "ported"), "v2 alone": bleu("lora", "v2_alone"),
             "v2 + LoRA re-trained": bleu("lora, on v2"), "v1 + AdaMix-LoRA": bleu("adamix-lora"),
             "v2 + v1's AdaMix-LoRA patch": bleu("adamix-lora", "ported")}
    kept = lambda arm: {s: r["ported"]["test"]["bleu"] - r["bleu"] for s, r in runs.get(arm, {}).items() if "ported" in r}
    found["AdaMix-LoRA: BLEU kept by porting"], found["LoRA: BLEU kept by porting"] = kept("adamix-lora"), kept("lora")
    v1, v2 = runs.get("lora", {}), runs.get("lora, on v2", {})
    found["negative flips, porting (-NFR, points)"] = {s: -100 * flips(v1[s]["slots_right"], v1[s]["ported"]["test"]["slots_right"])
                                                      for s in v1 if "ported" in v1[s]}
    found["negative flips, re-training (-NFR, points)"] = {s: -100 * flips(v1[s]["slots_right"], v2[s]["slots_right"])
                                                          for s in v1 if s in v2}
    compatible = runs.get(COMPATIBLE, {})
    found["v2 + compatibility adapter"] = {s: r["bleu"] for s, r in compatible.items()}
    found["negative flips, compatibility adapter (-NFR, points)"] = {
        s: -100 * flips(v1[s]["slots_right"], compatible[s]["slots_right"]) for s in v1 if s in compatible}
    return found


def claims(runs):
    found = scores(runs)
    rows = [Claim("P", "v2 + v1's patch ~ LoRA re-trained on v2", "v2 + v1's LoRA patch", "v2 + LoRA re-trained",
                  found["v2 + v1's LoRA patch"], found["v2 + LoRA re-trained"], "equivalent", MARGIN),
            Claim("P", "v2 + v1's patch >= v2 alone", "v2 + v1's LoRA patch", "v2 alone",
                  found["v2 + v1's LoRA patch"], found["v2 alone"]),
            Claim("A", "AdaMix-LoRA keeps at least LoRA's BLEU when ported", "AdaMix-LoRA: BLEU kept by porting",
                  "LoRA: BLEU kept by porting", found["AdaMix-LoRA: BLEU kept by porting"],
                  found["LoRA: BLEU kept by porting"]),
            Claim("F", "porting flips no more MRs than re-training (NFR)", "negative flips, porting (-NFR, points)",
                  "negative flips, re-training (-NFR, points)", found["negative flips, porting (-NFR, points)"],
                  found["negative flips, re-training (-NFR, points)"]),
            Claim("C", "the compatibility adapter flips no more MRs than re-training (NFR)",
                  "negative flips, compatibility adapter (-NFR, points)", "negative flips, re-training (-NFR, points)",
                  found["negative flips, compatibility adapter (-NFR, points)"],
                  found["negative flips, re-training (-NFR, points)"]),
            Claim("C", "the compatibility adapter ~ re-training in BLEU", "v2 + compatibility adapter",
                  "v2 + LoRA re-trained", found["v2 + compatibility adapter"], found["v2 + LoRA re-trained"],
                  "equivalent", MARGIN)]
    return report.correct_for_many_claims([c.judge() for c in rows])


def table(runs, out, seeds):
    found = scores(runs)
    lines = ["| model | test BLEU | seeds |", "|---|---|---|"]
    for name in ("v1 + LoRA", "v2 alone", "v2 + v1's LoRA patch", "v2 + LoRA re-trained", "v2 + compatibility adapter",
                 "v1 + AdaMix-LoRA", "v2 + v1's AdaMix-LoRA patch"):
        if found[name]:
            mean, std = stats.mean_std(found[name].values())
            lines.append(f"| {name} | {mean:.2f} ± {std:.2f} | {len(found[name])} |")
    found_lemma = lemma(out, seeds)
    if found_lemma:
        rel = stats.mean_std(v["relative_difference"] for v in found_lemma.values())
        cos = stats.mean_std(v["cosine"] for v in found_lemma.values())
        lines.append("")
        lines.append(f"PortLLM's lemma, LoRA on v2 against LoRA on v1 (same seed), over {len(found_lemma)} seed(s): "
                     f"||dW_v2 - dW_v1|| / ||dW_v1|| = {rel[0]:.3f} ± {rel[1]:.3f}; cosine {cos[0]:.3f} ± {cos[1]:.3f}.")
    return "\n".join(lines), found_lemma


def compare_command(args, base):
    """`compare --task e2e --suite porting`."""
    v2 = V2
    if not (Path(v2) / "model.safetensors").is_file():
        raise FileNotFoundError(f"no evolved tiny GPT in {v2}: make it first with `python3 -m tinymix pretrain-gpt "
                                f"--continue-from data/tiny_gpt --steps 600 --lr 0.002 --seed 1 --e2e-share 0.8 "
                                f"--out {v2}` (docs/plans/porting.md)")
    out = Path(args.out)
    task = Porting(base, v2, out)
    chosen_arms, grid = protocol.settings(args, arms(v2), e2e_experiment.GRID)
    chosen = protocol.learning_rates(task, chosen_arms, grid, args, out)
    runs, diverged, missing = protocol.final(task, chosen_arms, chosen, range(args.seeds), out, args.workers,
                                             report_only=args.report_only)
    judged = claims(runs)
    bleu_table, found_lemma = table(runs, out, range(args.seeds))
    text = "\n\n".join(part for part in [
        *report.opening(judged, CLAIMS, "docs/plans/porting.md", "Claims: paired differences, 95% CI over seeds "
                        "(BLEU points; flips in points of the 100 test MRs):"),
        f"v1: {base.model}; v2: {v2} (v1 pretrained further, the same tokenizer). Budget: {base.steps} steps of batch "
        f"{base.batch_size} over {base.train_size} training MRs, the official GPT-2 recipe; beam search (width "
        f"{base.beam_width}); mean ± std over seeds 0..{args.seeds - 1}. A patch is the merged adapter, folded into "
        "the weights of the base it is deployed on; an MR is right when its output realises every slot.",
        bleu_table, report.tuning_table(chosen), report.waiting_claims(judged),
        report.status(chosen, chosen_arms, diverged, missing)] if part)
    report.write(out, text, "results_porting.md", name="porting.md")
    checkpoint.save_json(out / "porting.json", {"v2": v2, "chosen": chosen, "claims": judged, "lemma": found_lemma,
                                                "seeds": args.seeds})
    print(text)
