"""LiST's self-training (Wang et al., Findings of NAACL 2022; by AdaMix's authors): a few-shot model
teaches itself from unlabelled sentences, in sessions.

After the model is trained on the few labelled sentences (train.py, as every few-shot arm), each session:
  1. TEACHER: the model as it is gives every unlabelled sentence a soft label p_i (its class probabilities).
  2. STUDENT: the model goes on training (only its trainable modules: LiST tunes only its adapters) on
     batches of unlabelled sentences against their soft labels, loss_i = cross-entropy(p_i, q(x_i)).
     Each example is RE-WEIGHTED by how much its gradient agrees with the labelled set's:
         w_i = max(0, <grad of the labelled loss, grad of loss_i>),  normalised to sum to 1
     (the first-order form of learning to re-weight examples, which LiST's meta re-weighting computes with
     a look-ahead step); a batch whose weights are all 0 is skipped. The step follows sum_i w_i grad loss_i.
  3. The student is fine-tuned on the labelled sentences again, and becomes the next session's teacher.

    history = self_train(cfg, model, tokenizer, labelled, unlabelled_texts, lr)

Deviations, and why: no prompts (MiniLM has no masked-language-model head; the few-shot arms here are
head-based, docs/plans/fewshot.md); the re-weighting is first-order, computed per example; sessions and steps
are fewer than LiST's 6 sessions of about 1,000 steps (cfg.self_training, cfg.self_training_steps) for this
machine's budget. Each session's diagnostics are returned: how many weights were above 0, and the teacher's
agreement with the hidden labels of the unlabelled pool where the caller knows them (never used to train).
"""
from . import backend
from . import functional as F
from .backend import xp
from .optim import AdamW
from .tensor import no_grad

LABELLED_EPOCHS = 10          # the fine-tuning on the labelled sentences that ends each session


def soft_labels(model, tokenizer, texts, batch_size=128):
    """(n, classes): the model's class probabilities for each text, in eval mode."""
    model.eval()
    found = []
    with no_grad():
        for start in range(0, len(texts), batch_size):
            ids, mask = tokenizer(texts[start:start + batch_size])
            found.append(F.softmax(model(ids, mask)).data)
    return xp.concatenate(found)


def reweight(reference, gradients):
    """Normalised weights max(0, <reference, g_i>) / sum, one per example's gradient g_i (lists of arrays,
    one per parameter); None when every weight is 0."""
    raw = [max(0.0, sum(float((a * b).sum()) for a, b in zip(reference, g))) for g in gradients]
    total = sum(raw)
    return [w / total for w in raw] if total > 0 else None


def _gradients(params):
    return [p.grad.copy() if p.grad is not None else xp.zeros_like(p.data) for p in params]


def self_train(cfg, model, tokenizer, labelled, unlabelled, lr, hidden_labels=None):
    """LiST's sessions on `model` (in place). labelled: a data.Split; unlabelled: texts. Returns a list of
    per-session diagnostics."""
    params = model.trainable_parameters()
    optimizer = AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    rng = backend.host_generator([cfg.seed, 29])
    labelled_ids, labelled_mask = tokenizer(labelled.texts)
    labelled_targets = xp.asarray(labelled.labels)
    history = []
    for session in range(cfg.self_training):
        teacher = soft_labels(model, tokenizer, unlabelled)
        found = {"session": session + 1, "skipped_batches": 0, "weights_above_zero": 0, "examples": 0}
        if hidden_labels is not None:
            found["teacher_agreement"] = float((backend.to_numpy(teacher.argmax(axis=-1)) ==
                                                backend.host.asarray(hidden_labels)).mean())
        model.train()
        for _ in range(cfg.self_training_steps):
            chosen = rng.choice(len(unlabelled), cfg.unlabelled_batch, replace=False).tolist()
            optimizer.zero_grad()
            F.cross_entropy(model(labelled_ids, labelled_mask), labelled_targets).backward()
            reference = _gradients(params)
            gradients = []
            for i in chosen:
                optimizer.zero_grad()
                ids, mask = tokenizer([unlabelled[i]])
                log_q = F.log_softmax(model(ids, mask))
                (-(log_q * teacher[i:i + 1]).sum()).backward()
                gradients.append(_gradients(params))
            weights = reweight(reference, gradients)
            found["examples"] += len(chosen)
            found["weights_above_zero"] += sum(w > 0 for w in weights) if weights else 0
            if weights is None:
                found["skipped_batches"] += 1
                continue
            for j, p in enumerate(params):
                p.grad = sum(xp.float32(w) * g[j] for w, g in zip(weights, gradients))
            optimizer.step()
        for _ in range(LABELLED_EPOCHS):            # the labelled sentences again, batches of cfg.batch_size
            order = rng.permutation(len(labelled)).tolist()
            for start in range(0, len(order), cfg.batch_size):
                batch = order[start:start + cfg.batch_size]
                ids, mask = tokenizer([labelled.texts[k] for k in batch])
                optimizer.zero_grad()
                F.cross_entropy(model(ids, mask), xp.asarray([labelled.labels[k] for k in batch])).backward()
                optimizer.step()
        history.append(found)
        print(f"self-training session {session + 1}: {found['weights_above_zero']} of {found['examples']} pseudo-"
              f"labelled examples weighted above 0" + (f"; the teacher agreed with the hidden labels on "
                                                       f"{found['teacher_agreement']:.1%}" if hidden_labels else ""))
    return history
