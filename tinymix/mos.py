"""MOS (Sun et al., "MOS: Model Surgery for Pre-Trained Model-Based Class-Incremental Learning", AAAI 2025):
learn classes task after task on a frozen model, one adapter per task, and never forget the old ones.

A class-incremental stream gives task t's classes (here: one sentiment domain's negative and positive
sentences, classes 2t and 2t + 1); after every task the model must tell apart ALL classes seen so far,
without being told which task a sentence comes from. MOS's parts, as its released code has them:

  1. ONE ADAPTER PER TASK on the frozen backbone; task t trains its own (and the head's rows of its classes).
  2. ADAPTER MERGING against forgetting: after every optimizer step of task t > 0, the adapter being trained
     becomes (1 - m) adapter + m mean(the adapters of earlier tasks), m = 0.1: AdaMix's averaging, used to
     keep a new task's adapter close to the old ones (merge_step).
  3. CLASSIFIER ALIGNMENT: after each task, every class seen so far keeps the mean and covariance of its
     features (under its own task's adapter); the head is re-trained on features sampled from those
     Gaussians, so that old and new classes are calibrated together without storing old sentences.
  4. SELF-REFINED ADAPTER RETRIEVAL at inference: predict with the first task's adapter, map the predicted
     class to its task, predict again with that task's adapter; repeat until the task stops changing (at
     most 4 times); the answer is the argmax of softmax(refined logits) + softmax(first logits).

    learner = Learner(model, tokenizer, merge=0.1, align=True, refine=True)
    for t, task in enumerate(stream):
        learner.learn(task.texts, task.labels)          # labels: global class ids of task t's classes
        accuracy, retrieved = learner.evaluate(seen_texts, seen_labels, seen_tasks)

Deviations, and why: the adapter is tinymix's (after the FFN, GELU; MOS uses AdaptFormer's, parallel to the
MLP, ReLU, scaled): the same bottleneck, the module tinymix already has. MOS's regulariser that pushes new
features away from stored prototypes (weight 0.1) is not built: its exact form is not confirmed. The
optimizer is AdamW at the adapter's rate on this task (the released code: SGD 0.03 for a ViT); the head is
re-aligned with SGD (lr 0.005, momentum 0.9, 30 epochs) as released. The ensemble weighs both softmaxes
equally (the released code's weighting of the first prediction is not confirmed). The covariance is shrunk
towards its mean variance (10%) so that 384 x 384 estimates from a few hundred sentences can be sampled.
"""
from . import backend, peft
from . import functional as F
from .backend import xp
from .optim import SGD, AdamW
from .tensor import Tensor, no_grad
from .transformer import mean_pool

MERGE = 0.1            # m: the share of the earlier adapters' mean mixed in after every step
ITERATIONS = 4         # the most retrieval rounds
SHRINK = 0.1           # covariance shrinkage towards (mean variance) I
ALIGN_SAMPLES, ALIGN_EPOCHS, ALIGN_LR = 256, 30, 0.005


def adapter_parameters(model):
    """[(name, Parameter)] of every Adapter in the model."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, peft.Adapter):
            found += [(f"{name}.{n}", p) for n, p in module.named_parameters()]
    return found


class Learner:
    """MOS on a SequenceClassifier with adapters (peft.AdapterConfig) and a head over every class of the stream."""

    def __init__(self, model, tokenizer, merge=MERGE, align=True, refine=True, lr=1e-3, epochs=5, batch_size=32,
                 seed=0, eval_batch_size=128, sequential=False):
        """sequential=True is the forgetting baseline instead: ONE adapter trained on each task in turn (from
        where the last task left it), cross-entropy over every class seen so far, no merging, alignment or
        retrieval."""
        self.model, self.tokenizer = model, tokenizer
        self.sequential = sequential
        self.merge, self.align, self.refine = (0.0, False, False) if sequential else (merge, align, refine)
        self.lr, self.epochs, self.batch_size, self.seed, self.eval_batch_size = lr, epochs, batch_size, seed, eval_batch_size
        self.params = adapter_parameters(model)
        self.fresh = {name: p.data.copy() for name, p in self.params}     # every task's adapter starts here
        self.adapters = []             # one {name: array} per task learnt
        self.classes = []              # the global class ids seen, in order
        self.task_of = {}              # class id -> task index
        self.stats = {}                # class id -> (mean, Cholesky factor of the shrunk covariance)

    # ---- adapters and features ----
    def use(self, task):
        for name, p in self.params:
            p.data = self.adapters[task][name].copy() if task is not None else self.fresh[name].copy()

    def features(self, texts, task):
        """(n, C): pooled sentence features under task `task`'s adapter (None: the fresh, near-identity one)."""
        self.use(task)
        self.model.eval()
        found = []
        with no_grad():
            for start in range(0, len(texts), self.eval_batch_size):
                ids, mask = self.tokenizer(texts[start:start + self.eval_batch_size])
                found.append(mean_pool(self.model.transformer(ids, mask).data, mask))
        return xp.concatenate(found)

    def logits(self, features):
        """(n, seen classes), in the order of self.classes."""
        with no_grad():
            out = self.model.classifier(Tensor(features)).data
        return out[:, xp.asarray(self.classes)]

    # ---- learning a task ----
    def learn(self, texts, labels):
        """Task t = len(self.adapters): its adapter (merged with the earlier ones after every step), then the
        class statistics and the head's alignment."""
        task = len(self.adapters)
        new = sorted(set(labels))
        self.classes += new
        self.task_of.update({c: task for c in new})
        self.use(None if not (self.sequential and self.adapters) else task - 1)
        trainable = [p for _, p in self.params] + list(self.model.classifier.parameters())
        optimizer = AdamW(trainable, lr=self.lr, weight_decay=0.0)
        trained_on = self.classes if self.sequential else new         # MOS: CE over the task's own classes
        local = xp.asarray(trained_on)
        target = {c: i for i, c in enumerate(trained_on)}
        rng = backend.host_generator([self.seed, 17, task])
        earlier = {name: sum(a[name] for a in self.adapters) / len(self.adapters) for name, _ in self.params} \
            if self.adapters else None
        self.model.train()
        for _ in range(self.epochs):
            order = rng.permutation(len(texts)).tolist()
            for start in range(0, len(order), self.batch_size):
                chosen = order[start:start + self.batch_size]
                ids, mask = self.tokenizer([texts[i] for i in chosen])
                logits = self.model(ids, mask)[:, local]
                loss = F.cross_entropy(logits, xp.asarray([target[labels[i]] for i in chosen]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if earlier is not None and self.merge > 0:
                    merge_step(self.params, earlier, self.merge)
        self.adapters.append({name: p.data.copy() for name, p in self.params})
        feats = self.features(texts, task)
        for c in new:
            rows = feats[xp.asarray([i for i, y in enumerate(labels) if y == c])]
            self.stats[c] = gaussian(rows)
        if self.align:
            self.align_head()

    def align_head(self):
        """Re-train the head on features drawn from every seen class's Gaussian (no stored sentences)."""
        rng = backend.host_generator([self.seed, 19, len(self.adapters)])
        xs, ys = [], []
        for i, c in enumerate(self.classes):
            mean, factor = self.stats[c]
            noise = xp.asarray(rng.standard_normal((ALIGN_SAMPLES, mean.shape[0])).astype("float32"))
            xs.append(mean + noise @ factor.T)
            ys += [i] * ALIGN_SAMPLES
        x, y = xp.concatenate(xs), xp.asarray(ys)
        head = self.model.classifier
        optimizer = SGD(list(head.parameters()), lr=ALIGN_LR, momentum=0.9)
        seen = xp.asarray(self.classes)
        for _ in range(ALIGN_EPOCHS):
            order = rng.permutation(len(y))
            for start in range(0, len(order), 64):
                chosen = xp.asarray(order[start:start + 64])
                loss = F.cross_entropy(head(Tensor(x[chosen]))[:, seen], y[chosen])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    # ---- inference ----
    def predict(self, texts):
        """(predicted class ids, the task whose adapter gave the answer) for each text."""
        if self.sequential:                          # the one adapter, as the last task left it
            last = len(self.adapters) - 1
            found = self.logits(self.features(texts, last))
            return [self.classes[i] for i in backend.to_numpy(found.argmax(axis=-1)).tolist()], [last] * len(texts)
        first = self.logits(self.features(texts, 0))
        if not self.refine:
            return [self.classes[i] for i in backend.to_numpy(first.argmax(axis=-1)).tolist()], [0] * len(texts)
        task = [self.task_of[self.classes[i]] for i in backend.to_numpy(first.argmax(axis=-1)).tolist()]
        refined = first.copy()
        for _ in range(ITERATIONS):
            for k in sorted(set(task)):
                rows = [i for i, t in enumerate(task) if t == k]
                refined[xp.asarray(rows)] = self.logits(self.features([texts[i] for i in rows], k))
            new_task = [self.task_of[self.classes[i]] for i in backend.to_numpy(refined.argmax(axis=-1)).tolist()]
            changed = new_task != task
            task = new_task
            if not changed:
                break
        scores = F.softmax(Tensor(refined)).data + F.softmax(Tensor(first)).data
        return [self.classes[i] for i in backend.to_numpy(scores.argmax(axis=-1)).tolist()], task

    def evaluate(self, texts, labels, tasks):
        """(accuracy over every seen class, share of texts whose retrieved task is their own)."""
        predicted, retrieved = self.predict(texts)
        accuracy = sum(p == y for p, y in zip(predicted, labels)) / len(labels)
        return accuracy, sum(r == t for r, t in zip(retrieved, tasks)) / len(tasks)


def merge_step(params, earlier, m):
    """adapter <- (1 - m) adapter + m mean(earlier adapters), in place."""
    for name, p in params:
        p.data = p.data * xp.float32(1 - m) + earlier[name] * xp.float32(m)


def gaussian(rows):
    """(mean, L) with L L^T the covariance of `rows`, shrunk by SHRINK towards its mean variance."""
    mean = rows.mean(axis=0)
    centred = rows - mean
    cov = centred.T @ centred / max(len(rows) - 1, 1)
    scale = max(float(xp.trace(cov)) / cov.shape[0], 1e-6)         # a floor: identical sentences have none
    cov = (1 - SHRINK) * cov + SHRINK * scale * xp.eye(cov.shape[0], dtype=xp.float32)
    return mean, xp.linalg.cholesky(cov.astype(xp.float32))
