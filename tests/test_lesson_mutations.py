"""Each lesson's key claims can fail: break the library thing a claim is about, run the lesson, and the
lesson must fail — at the assert that states the claim.

Every case runs one lesson in fast mode in a fresh process, after a patch applied to the library
in that process only (the files on disk are never touched), through the same runner a reader uses
(lessons/run.py). The control case runs the same driver without a patch and must pass, so a
failure below is the mutation's doing, not the driver's.

Some claims are about the lesson's own arithmetic, not the library (lesson 14's confidence
intervals): those cases break a copy of the lesson's text instead.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
sys.path.insert(0, str(LESSONS))
import run as runner  # noqa: E402

DRIVER = """
import sys
from pathlib import Path
sys.path[:0] = [{lessons!r}, {root!r}]
import support   # its environment settings precede NumPy's import
{patch}
import run
outcome = run.run_lesson(Path({lesson!r}), show_code=False)
sys.exit(0 if outcome else 1)
"""

# (name, lesson, the patch, a piece of the failure output that names the broken claim)
MUTATIONS = [
    ("unbroadcast forgets stretched axes", "01", """
        import tinymix.tensor as tensor
        def _unbroadcast(grad, shape):                  # sums the added leading axes only
            extra = grad.ndim - len(shape)
            return grad.sum(axis=tuple(range(extra))) if extra else grad
        tensor._unbroadcast = _unbroadcast
        """, "assert W.grad.shape == W.shape and bias.grad.shape == bias.shape and scale.grad.shape"),
    ("averaging returns the first expert", "00", """
        from tinymix import adamix
        def averaged_weights(self):
            first = self.experts[0]
            return first.weight, first.bias
        adamix.Mixture.averaged_weights = averaged_weights
        """, "merged != mean of the experts"),
    ("averaging returns the first expert", "13", """
        from tinymix import adamix
        def averaged_weights(self):
            first = self.experts[0]
            return first.weight, first.bias
        adamix.Mixture.averaged_weights = averaged_weights
        """, "assert gaps[\"LoRA, B shared\"] < 1e-6"),
    ("adapter with a non-linearity after up", "08", """
        # wrong only for large weights: the lesson's first cell (small weights) checks the forward
        # formula and would catch it at once; the column-space claim must catch it on its own
        from tinymix import peft
        from tinymix import functional as F
        original = peft.Adapter.forward
        def forward(self, h):
            if float(abs(self.up.weight.data).max()) < 0.2:
                return original(self, h)
            return h + F.gelu(self.up(F.gelu(self.down(h))))
        peft.Adapter.forward = forward
        """, "every column of db/dh lies in the column space of U"),
    ("mixture computes every expert", "10", """
        from tinymix import adamix
        original = adamix.Mixture.forward
        def forward(self, x):
            if not self.training:
                return original(self, x)
            if self.draws_route:
                self.route.index = adamix.backend.host_choice(self.num_experts)
            outputs = [expert(x) for expert in self.experts]
            return outputs[self.route.index]
        adamix.Mixture.forward = forward
        """, "one call computes ONE expert: the chosen one"),
    ("the optimizer is always lazy", "10", """
        from tinymix import optim
        original = optim.Optimizer.step
        def step(self):
            self.lazy = True
            original(self)
        optim.Optimizer.step = step
        """, "dense: an expert moves at every step from its first route on"),
    ("the optimizer ignores lazy=True", "10", """
        from tinymix import optim
        original = optim.Optimizer.step
        def step(self):
            self.lazy = False
            original(self)
        optim.Optimizer.step = step
        """, "lazy: an expert moves exactly on the steps it was routed"),
    ("LoRA A-experts start independent by default", "10", """
        from tinymix import peft
        original = peft._projection
        def _projection(config, make_linear, shared, key, route=None):
            if getattr(config, "expert_init", None) == "official":
                import dataclasses
                config = dataclasses.replace(config, expert_init="independent")
            return original(config, make_linear, shared, key, route)
        peft._projection = _projection
        """, "LoRA A-experts start as identical copies"),
    ("LoRA A-experts start independent by default", "15", """
        from tinymix import peft
        original = peft._projection
        def _projection(config, make_linear, shared, key, route=None):
            if getattr(config, "expert_init", None) == "official":
                import dataclasses
                config = dataclasses.replace(config, expert_init="independent")
            return original(config, make_linear, shared, key, route)
        peft._projection = _projection
        """, "the default starts the A-experts as identical copies"),
    ("the consistency gradient flows into its target", "11", """
        from tinymix import functional as F
        F.symmetric_kl = lambda p, q, weights=None: (F.kl_div(p, q, weights) + F.kl_div(q, p, weights)) * 0.5
        """, "assert xp.allclose(z1.grad, (p - q) / (2 * N), atol=1e-12)"),
    ("recomputation draws new routes for the replay", "12", """
        from tinymix import adamix, backend
        original = adamix.two_pass_backward
        def two_pass_backward(forward, task_loss, consistency_weight, target_mask=None, low_memory=False):
            calls = []
            def forward_then_replay_drawing_afresh():
                calls.append(1)
                if low_memory and len(calls) == 3:           # the replay of pass 2: other routes
                    backend.host_rng.integers(1000)
                return forward()
            return original(forward_then_replay_drawing_afresh, task_loss, consistency_weight, target_mask,
                            low_memory)
        adamix.two_pass_backward = two_pass_backward
        """, "same gradients both ways"),
    ("low_memory is ignored", "12", """
        from tinymix import adamix
        original = adamix.two_pass_backward
        adamix.two_pass_backward = lambda *args, low_memory=False, **kw: original(*args, low_memory=False, **kw)
        """, "recomputing holds one graph at a time"),
    ("softmax backward forgets the <g, y> term", "03", """
        from tinymix import functional as F
        from tinymix.tensor import Tensor
        def softmax(x, axis=-1):
            shifted = x.data - x.data.max(axis=axis, keepdims=True)
            e = F.xp.exp(shifted)
            out = e / e.sum(axis=axis, keepdims=True)
            def backward(g):
                x._accumulate(out * g)
            return Tensor._make(out, (x,), backward)
        F.softmax = softmax
        """, "assert xp.allclose(grad_of(F.softmax, x, g), y * (g - (g * y).sum()), atol=1e-12)"),
    ("layer norm backward forgets the path through the variance", "04", """
        from tinymix import functional as F
        from tinymix.tensor import Tensor
        original = F.layer_norm
        def layer_norm(x, weight, bias, eps=1e-5):
            mean = x.data.mean(axis=-1, keepdims=True)
            r = 1.0 / F.xp.sqrt(((x.data - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
            xhat = (x.data - mean) * r
            out = original(Tensor(x.data, dtype=x.dtype), weight, bias, eps)
            def backward(g):
                a = g * weight.data
                x._accumulate(r * (a - a.mean(axis=-1, keepdims=True)))
            return Tensor._make(out.data, (x,), backward)
        F.layer_norm = layer_norm
        """, "assert xp.allclose(fused, chain, atol=1e-10)"),
    ("the UniPELT gate ignores its input", "18", """
        from tinymix.neighbours import unipelt
        def forward(self, x):
            z = self.linear(x * 0.0)                          # the bias alone: one value for every example
            gate = ((z * 0.5).tanh() * 0.5 + 0.5).mean(axis=1)
            self.last = gate.data
            return gate
        unipelt.Gate.forward = forward
        """, "gates vary across examples"),
    ("UniPELT merges without a word", "18", """
        from tinymix.neighbours import unipelt
        unipelt.merge = lambda model: model
        """, "merging a UniPELT model is refused"),
    ("the dropped triplets are not masked after the final allocation", "19", """
        from tinymix.neighbours import adalora
        original = adalora.RankAllocator.update_and_allocate
        def update_and_allocate(self, model, step):
            if step > self.config.total_step - self.config.tfinal:
                return self.target_budget, self.rank_pattern   # the masked lambdas are left to the optimizer
            return original(self, model, step)
        adalora.RankAllocator.update_and_allocate = update_and_allocate
        """, "masked lambdas are exactly zero"),
    ("the allocator keeps one triplet too many", "19", """
        from tinymix.neighbours import adalora
        original = adalora.RankAllocator.mask_to_budget
        adalora.RankAllocator.mask_to_budget = lambda self, model, budget: original(self, model, budget + 1)
        """, "after the final allocation the target budget is kept exactly"),
    ("the PHM layer reads its rules transposed", "20", """
        from tinymix.neighbours import phm
        def weight(self):
            rules, n = self.shared[0].transpose(0, 2, 1), self.n
            W = self.W_left @ self.W_right
            p, q = W.shape[1], W.shape[2]
            kron = rules.reshape(n, n, 1, n, 1) * W.reshape(n, 1, p, 1, q)
            return kron.sum(axis=0).reshape(n * p, n * q).transpose(1, 0)
        phm.PHMLinear.weight = property(weight)
        """, "H = sum_s A_s (x) W_s"),
    ("the Hadamard merge keeps the first expert", "20", """
        from tinymix import adamix
        from tinymix.neighbours import hadamard
        hadamard._mean_expert = lambda adapter: adapter.experts[0] if isinstance(adapter, adamix.Mixture) else adapter
        """, "the merged Hadamard model predicts as the average inference"),
    ("TIES averages every trimmed value, agreeing or not", "21", """
        from tinymix import merging
        from tinymix.backend import xp
        merging.disjoint_mean = lambda trimmed, sign, weights=None: trimmed.sum(axis=0) / xp.maximum(
            (trimmed != 0).sum(axis=0), 1).astype(xp.float32)
        """, "ties by hand = merging.ties"),
    ("TIES trims to twice its share", "21", """
        from tinymix import merging
        original = merging.trim
        merging.trim = lambda delta, density: original(delta, min(1.0, 2 * density))
        """, "TIES keeps at most its top-k share"),
    ("PCB drops nothing", "21", """
        from tinymix import merging
        from tinymix.backend import xp
        merging.pcb_drop = lambda beta, ratio: xp.ones_like(beta)
        """, "PCB keeps about its ratio"),
    ("porting builds the model on v1 whatever it is asked", "22", """
        from dataclasses import replace
        from tinymix.e2e import finetune
        original = finetune.build_model
        finetune.build_model = lambda cfg: original(replace(cfg, model="tiny-gpt"))
        """, "the ported model is W_v2 + Delta W_v1"),
    ("the flip rate counts every change, not only right-to-wrong", "22", """
        from tinymix.experiments import porting
        porting.flips = lambda before, after: sum(b != a for b, a in zip(before, after)) / len(before)
        """, "NFR: right before, wrong after"),
]


# (name, lesson, the text to break, what to put instead, a piece of the failure output)
TEXT_MUTATIONS = [
    ("the interval forgets the 1.96", "14", "return float(d.mean()), Z * float(d.std(ddof=1))",
     "return float(d.mean()), float(d.std(ddof=1))", "the interval formula agrees with the bootstrap"),
    ("the figure zooms in on the points", "14", "figure.tight_layout()\nbottom, top = left.get_ylim()",
     "left.set_ylim(min(p for p, _ in accuracies.values()), max(p for p, _ in accuracies.values()))\n"
     "bottom, top = left.get_ylim()", "every interval fits the axis"),
]


def _run(lesson, patch, tmp_path, path=None):
    path = path or runner.lesson_files()[lesson]
    code = DRIVER.format(lessons=str(LESSONS), root=str(ROOT), patch=textwrap.dedent(patch), lesson=str(path))
    env = {**os.environ, "TINYMIX_FAST": "1", "TINYMIX_LESSON_FIGURES": str(tmp_path), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_driver_passes_an_unbroken_lesson(tmp_path):
    result = _run("01", "", tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("name, lesson, patch, claim", MUTATIONS, ids=[f"{m[1]}: {m[0]}" for m in MUTATIONS])
def test_lesson_fails_on_a_broken_library(name, lesson, patch, claim, tmp_path):
    result = _run(lesson, patch, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"lesson {lesson} still passes with '{name}':\n{output[-3000:]}"
    assert claim in output, f"lesson {lesson} failed with '{name}', but not at the claim:\n{output[-3000:]}"


@pytest.mark.parametrize("name, lesson, old, new, claim", TEXT_MUTATIONS, ids=[f"{m[1]}: {m[0]}" for m in TEXT_MUTATIONS])
def test_lesson_fails_when_its_own_arithmetic_is_broken(name, lesson, old, new, claim, tmp_path):
    original = runner.lesson_files()[lesson]
    text = original.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"the text to break is not in {original.name} exactly once"
    broken = tmp_path / original.name
    broken.write_text(text.replace(old, new), encoding="utf-8")
    result = _run(lesson, "", tmp_path, path=broken)
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"lesson {lesson} still passes with '{name}':\n{output[-3000:]}"
    assert claim in output, f"lesson {lesson} failed with '{name}', but not at the claim:\n{output[-3000:]}"
