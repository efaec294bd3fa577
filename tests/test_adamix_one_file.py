"""lessons/adamix_in_one_file.py against the library: the same tiny model (frozen layers, adapter
mixtures with a shared up-projection, a head), the same weights and the same routes must give the
same loss, the same gradient for every trainable array, and the same merged weights and outputs,
to float32 rounding judged at each array's own scale. A one-file reading with one KL direction
dropped must fail the same comparison."""
import importlib.util
from pathlib import Path

import pytest

from tinymix import adamix, backend
from tinymix import functional as F
from tinymix.backend import host
from tinymix.nn import Linear, Module, ModuleList, Parameter
from tinymix.peft import Adapter

pytestmark = pytest.mark.numerics

PATH = Path(__file__).resolve().parent.parent / "lessons" / "adamix_in_one_file.py"
ROUNDING = 1e-5            # float32 has 24 bits (6e-8); a few dozen operations in a row stay far below this


def load_one_file():
    spec = importlib.util.spec_from_file_location("adamix_in_one_file", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def linear_from(W, b, trainable=True):
    layer = Linear(W.shape[1], W.shape[0])
    layer.weight = Parameter(backend.from_numpy(W.copy()), requires_grad=trainable)
    layer.bias = Parameter(backend.from_numpy(b.copy()), requires_grad=trainable)
    return layer


class LibraryModel(Module):
    """The one file's model built from the library's pieces: Linear, Mixture, Adapter."""

    def __init__(self, params):
        self.frozen = ModuleList([linear_from(*layer["frozen"], trainable=False) for layer in params["layers"]])
        self.adapters = ModuleList([
            Adapter(adamix.Mixture([linear_from(W, b) for W, b in layer["down"]]), linear_from(*layer["up"]))
            for layer in params["layers"]])
        self.head = linear_from(*params["head"])

    def forward(self, x):
        h = x
        for frozen, adapter in zip(self.frozen, self.adapters):
            h = adapter(F.gelu(frozen(h)))
        return self.head(h)

    def route(self):
        return [adapter.down.route.index for adapter in self.adapters]


def off(got, expected):
    """The largest difference relative to the expected array's largest magnitude."""
    got, expected = host.asarray(got, dtype=host.float64), host.asarray(expected, dtype=host.float64)
    return float(abs(got - expected).max() / max(abs(expected).max(), 1e-30))


def compare(one_file, seed=3, weight=1.0):
    """{what: relative difference} between the one file and the library, for one AdaMix step."""
    rng = host.random.default_rng(seed)
    params = one_file.init(rng, std=0.3)
    x = rng.standard_normal((one_file.N, one_file.D)).astype(host.float32)
    y = rng.integers(one_file.C, size=one_file.N)
    backend.manual_seed(seed)
    model = LibraryModel(params).train()
    routes = []

    def forward():
        logits = model(backend.from_numpy(x))
        routes.append(model.route())
        return logits
    loss, task, agree = adamix.two_pass_loss(forward, lambda z: F.cross_entropy(z, backend.from_numpy(y)), weight)
    loss.backward()
    assert routes[0] != routes[1], "pick a seed whose two passes route differently somewhere"
    mine_loss, mine_task, mine_agree, grads = one_file.adamix_loss(params, x, y, routes[0], routes[1], weight)
    found = {"loss": off(mine_loss, float(loss.data)), "task": off(mine_task, float(task.data)),
             "consistency": off(mine_agree, float(agree.data))}
    assert found["consistency"] < 1 and float(agree.data) > 1e-4, "the consistency term must matter here"
    for l, (adapter, slot) in enumerate(zip(model.adapters, grads["layers"])):
        for k, (expert, (dW, db)) in enumerate(zip(adapter.down.experts, slot["down"])):
            library = [backend.to_numpy(p.grad) if p.grad is not None else host.zeros_like(mine)
                       for p, mine in ((expert.weight, dW), (expert.bias, db))]
            scale = max(abs(g).max() for layer in grads["layers"] for e in layer["down"] for g in e) or 1.0
            found[f"layer {l} expert {k} gradient"] = max(float(abs(library[0] - dW).max()),
                                                          float(abs(library[1] - db).max())) / scale
        found[f"layer {l} shared up gradient"] = max(off(slot["up"][0], backend.to_numpy(adapter.up.weight.grad)),
                                                     off(slot["up"][1], backend.to_numpy(adapter.up.bias.grad)))
    found["head gradient"] = off(grads["head"][0], backend.to_numpy(model.head.weight.grad))
    merged = one_file.merge(params)
    adamix.merge_experts(model)
    for l, (adapter, layer) in enumerate(zip(model.adapters, merged["layers"])):
        found[f"layer {l} merged down weight"] = off(layer["down"][0][0], backend.to_numpy(adapter.down.weight.data))
        found[f"layer {l} merged down bias"] = off(layer["down"][0][1], backend.to_numpy(adapter.down.bias.data))
    model.eval()
    mine_logits, _ = one_file.forward(merged, x, [0] * one_file.L)
    found["merged model's logits"] = off(mine_logits, backend.to_numpy(model(backend.from_numpy(x)).data))
    return found


def test_the_one_file_adamix_gives_the_librarys_numbers():
    found = compare(load_one_file())
    worst = max(found, key=found.get)
    assert found[worst] < ROUNDING, f"{worst} differs by {found[worst]:.2e} of its scale:\n" + \
        "\n".join(f"  {k}: {v:.1e}" for k, v in found.items())


def test_a_one_file_adamix_with_one_kl_direction_dropped_is_caught(monkeypatch):
    one_file = load_one_file()
    kl = one_file.kl
    monkeypatch.setattr(one_file, "consistency", lambda z1, z2: (0.5 * kl(z1, z2)[0], 0.5 * kl(z1, z2)[1],
                                                                 0.0 * z2))
    found = compare(one_file)
    assert max(found.values()) > 100 * ROUNDING


def test_the_one_file_reading_stays_short_and_uses_only_numpy_from_tinymix():
    text = PATH.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    imports = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    assert [i for i in imports if "tinymix" in i] == ["from tinymix.backend import host as np  # noqa: E402  "
                                                     "(NumPy itself, as every lesson gets it)"]


@pytest.mark.parametrize("steps", [3])
def test_the_one_file_runs_as_a_script(steps, capsys):
    params, merged = load_one_file().main(steps=steps)
    assert "accuracy of the merged model" in capsys.readouterr().out
    assert all(len(layer["down"]) == 1 for layer in merged["layers"])
