"""AdaMix in one file: the whole algorithm on a tiny model, with every backward written by hand.

    python3 lessons/adamix_in_one_file.py

Read it top to bottom. It uses NumPy and nothing else from tinymix, so every number comes from code
on this page; tests/test_adamix_one_file.py checks that the library (tinymix.adamix, tinymix.peft)
gives the same loss, gradients and merged weights for the same weights and the same routes.
The section marks (§) point into docs/adamix.md.

The model: L frozen layers h <- GELU(h W^T + b), each followed by an adapter mixture
h <- h + up(GELU(down_k(h))) with M down-projection experts and ONE shared up-projection (§2, §5),
then a trainable classification head. Sizes: N examples, D features, R bottleneck, M experts,
C classes.
"""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the repository, nothing installed
from tinymix.backend import host as np  # noqa: E402  (NumPy itself, as every lesson gets it)

N, D, R, M, C, L = 16, 8, 3, 4, 3, 2     # batch, width, bottleneck, experts, classes, layers


# ---- 1. the pieces, each with its backward beside its forward --------------------------------------
# Each function returns its output and back(g): given dLoss/doutput, the gradients of its inputs.

def linear(x, W, b):
    """y = x W^T + b, W of shape (out, in)."""
    def back(g):                                   # g: (N, out)
        return g @ W, g.T @ x, g.sum(axis=0)       # dx (N, in), dW (out, in), db (out,)
    return x @ W.T + b, back


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):
    """GELU(x) = x Phi(x), Phi the standard normal CDF;  d/dx = Phi(x) + x phi(x)."""
    cdf = (0.5 * (1.0 + _erf(x / math.sqrt(2.0)))).astype(x.dtype)
    pdf = (np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)).astype(x.dtype)
    return x * cdf, lambda g: g * (cdf + x * pdf)


def log_softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)    # exp of a large logit would overflow
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(z, y):
    """mean_n -log softmax(z_n)[y_n];  dz = (softmax(z) - onehot(y)) / N."""
    logp = log_softmax(z)
    rows = np.arange(len(y))
    dz = np.exp(logp)
    dz[rows, y] -= 1.0
    return -logp[rows, y].mean(), dz / len(y)


def kl(student, teacher):
    """KL(softmax(teacher) || softmax(student)), averaged over the batch, and its gradient with
    respect to the student's logits only: the teacher is a fixed target (stop-gradient, §4)."""
    log_p, log_q = log_softmax(student), log_softmax(teacher)
    q = np.exp(log_q)
    value = (q * (log_q - log_p)).sum(axis=-1).mean()
    return value, (np.exp(log_p) - q) / len(student)


def consistency(z1, z2):
    """AdaMix's consistency loss (§4): 1/2 [KL(sg(p2) || p1) + KL(sg(p1) || p2)].
    Each pass learns to match the other; neither direction sends a gradient into its target."""
    kl_12, dz1 = kl(z1, z2)
    kl_21, dz2 = kl(z2, z1)
    return 0.5 * (kl_12 + kl_21), 0.5 * dz1, 0.5 * dz2


# ---- 2. the parameters --------------------------------------------------------------------------

def init(rng, std=0.02):
    """Frozen layers; per layer M independent down-experts (§2: N(0, std), bias 0) and one shared
    up-projection (not zero at the start); the head. Every array float32."""
    normal = lambda *shape: (rng.standard_normal(shape) * std).astype(np.float32)
    zeros = lambda *shape: np.zeros(shape, dtype=np.float32)
    layers = [{"frozen": (normal(D, D) / std / math.sqrt(D), normal(D)),
               "down": [(normal(R, D), zeros(R)) for _ in range(M)],
               "up": (normal(D, R), zeros(D))} for _ in range(L)]
    return {"layers": layers, "head": (normal(C, D), zeros(C))}


def zeros_like(params):
    """Gradient slots for everything that trains: every expert, the shared side, the head."""
    z = lambda pair: tuple(np.zeros_like(a) for a in pair)
    return {"layers": [{"down": [z(e) for e in layer["down"]], "up": z(layer["up"])}
                       for layer in params["layers"]], "head": z(params["head"])}


def add(slot, grads):
    for s, g in zip(slot, grads):
        s += g


# ---- 3. stochastic routing (§3) and one forward pass ------------------------------------------------

def draw_route(rng, params):
    """One uniform draw per mixture for the WHOLE batch: an expert index per layer."""
    return [int(rng.integers(len(layer["down"]))) for layer in params["layers"]]


def forward(params, x, route):
    """Logits (N, C) with expert route[l] in layer l, and back(dz, grads), which adds this pass's
    gradients into grads. Only the routed expert is used, so only it receives a gradient."""
    tape = []
    h = x
    for layer, k in zip(params["layers"], route):
        f, back_frozen = linear(h, *layer["frozen"])
        h, back_act = gelu(f)
        d, back_down = linear(h, *layer["down"][k])              # (N, R): the routed expert
        a, back_gelu = gelu(d)
        u, back_up = linear(a, *layer["up"])                      # (N, D): shared by all experts
        tape.append((k, back_frozen, back_act, back_down, back_gelu, back_up))
        h = h + u                                                 # the adapter's residual
    z, back_head = linear(h, *params["head"])

    def back(dz, grads):
        dh, dW, db = back_head(dz)
        add(grads["head"], (dW, db))
        for slot, (k, back_frozen, back_act, back_down, back_gelu, back_up) in zip(
                reversed(grads["layers"]), reversed(tape)):
            da, dW, db = back_up(dh)                              # the residual passes dh on as is
            add(slot["up"], (dW, db))
            dx, dW, db = back_down(back_gelu(da))
            add(slot["down"][k], (dW, db))
            dh = dh + dx
            dh, _, _ = back_frozen(back_act(dh))                  # frozen: its dW is thrown away
    return z, back


# ---- 4. the AdaMix objective: two passes, task loss + weight * consistency (§4) --------------------

def adamix_loss(params, x, y, route_1, route_2, weight=1.0):
    """(loss, task, consistency, grads). Pass 1 carries the task loss; pass 2, with its own routes,
    enters only through the consistency term."""
    z1, back_1 = forward(params, x, route_1)
    z2, back_2 = forward(params, x, route_2)
    task, dz1 = cross_entropy(z1, y)
    agree, dz1_agree, dz2_agree = consistency(z1, z2)
    grads = zeros_like(params)
    back_1(dz1 + weight * dz1_agree, grads)
    back_2(weight * dz2_agree, grads)
    return task + weight * agree, task, agree, grads


def sgd(params, grads, lr):
    for layer, slot in zip(params["layers"], grads["layers"]):
        for expert, g in zip(layer["down"], slot["down"]):
            add(expert, tuple(-lr * gi for gi in g))
        add(layer["up"], tuple(-lr * gi for gi in slot["up"]))
    add(params["head"], tuple(-lr * gi for gi in grads["head"]))


# ---- 5. merging: every mixture becomes ONE module, the mean of its experts (§6) ---------------------

def merge(params):
    """The deployed model: per layer one down-projection holding the experts' mean weight and bias.
    Its size and cost are one adapter's (§8)."""
    mean = lambda arrays: sum(arrays) / len(arrays)
    layers = [{"frozen": layer["frozen"], "up": layer["up"],
               "down": [(mean([W for W, _ in layer["down"]]), mean([b for _, b in layer["down"]]))]}
              for layer in params["layers"]]
    return {"layers": layers, "head": params["head"]}


def count(params):
    trained = sum(W.size + b.size for layer in params["layers"] for W, b in layer["down"] + [layer["up"]])
    return trained + sum(a.size for a in params["head"])


# ---- 6. a toy run: train with random routes, then deploy the average --------------------------------

def accuracy(params, x, y, route):
    z, _ = forward(params, x, route)
    return float((z.argmax(axis=-1) == y).mean())


def main(steps=600, lr=0.5, seed=0, std=0.3):
    """std 0.3 instead of the official 0.02: on a toy this small the experts then start far enough
    apart for the consistency term to have something to do."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N * 8, D)).astype(np.float32)
    y = (x @ rng.standard_normal((D, C))).argmax(axis=-1)           # a linear teacher's labels
    params = init(rng, std)
    for step in range(steps):
        rows = rng.choice(len(x), N, replace=False)
        loss, task, agree, grads = adamix_loss(params, x[rows], y[rows], draw_route(rng, params),
                                               draw_route(rng, params))
        sgd(params, grads, lr)
        if step % 150 == 0 or step == steps - 1:
            print(f"step {step:3d}  loss {loss:.4f} = task {task:.4f} + 1.0 x consistency {agree:.5f}")
    merged = merge(params)
    single = [accuracy(params, x, y, [k] * L) for k in range(M)]
    print(f"trainable while training: {count(params):,d}; after merging: {count(merged):,d}")
    print("accuracy of each expert alone: " + ", ".join(f"{a:.3f}" for a in single))
    print(f"accuracy of the merged model: {accuracy(merged, x, y, [0] * L):.3f}")
    return params, merged


if __name__ == "__main__":
    main()
