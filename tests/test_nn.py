"""Modules: how parameters are found and named, modes, freezing, and saving/loading by name."""
import pytest

from tinymix import backend, manual_seed
from tinymix import functional as F
from tinymix.backend import xp
from tinymix.nn import Dropout, LayerNorm, Linear, Module, ModuleList, Parameter

pytestmark = pytest.mark.numerics


class Toy(Module):
    """A small tree: a Linear, a ModuleList of a bias-free Linear and a LayerNorm, a bare Parameter,
    and a Dropout (a module with no parameters)."""

    def __init__(self):
        self.first = Linear(3, 4)
        self.blocks = ModuleList([Linear(4, 4, bias=False), LayerNorm(4)])
        self.scale = Parameter(xp.ones(1, dtype=xp.float32))
        self.dropout = Dropout(0.5)
        self.label = "not a module"  # plain attributes are neither children nor parameters

    def forward(self, x):
        h = self.blocks[1](self.blocks[0](self.first(x)))
        return self.dropout(h) * self.scale


NAMES = ["first.weight", "first.bias", "blocks.0.weight", "blocks.1.weight", "blocks.1.bias", "scale"]
SHAPES = {"first.weight": (4, 3), "first.bias": (4,), "blocks.0.weight": (4, 4),
          "blocks.1.weight": (4,), "blocks.1.bias": (4,), "scale": (1,)}


def make_toy(seed=0):
    manual_seed(seed)
    return Toy()


# ---- walking the tree ---------------------------------------------------------------------------

def test_named_parameters_are_dotted_paths_in_definition_order():
    toy = make_toy()
    named = list(toy.named_parameters())
    assert [name for name, _ in named] == NAMES
    assert {name: p.shape for name, p in named} == SHAPES
    assert all(isinstance(p, Parameter) for _, p in named)


def test_parameters_are_the_same_objects_as_named_parameters():
    toy = make_toy()
    assert [id(p) for p in toy.parameters()] == [id(p) for _, p in toy.named_parameters()]
    assert toy.parameters()[0] is toy.first.weight
    assert toy.parameters()[2] is toy.blocks[0].weight


def test_bias_free_linear_has_no_bias_parameter():
    layer = Linear(4, 2, bias=False)
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    assert layer.bias is None


def test_children_and_module_list_indexing():
    toy = make_toy()
    assert [name for name, _ in toy.named_children()] == ["first", "blocks", "dropout"]
    assert toy.children() == [toy.first, toy.blocks, toy.dropout]
    assert len(toy.blocks) == 2
    assert isinstance(toy.blocks[0], Linear) and isinstance(toy.blocks[1], LayerNorm)
    assert toy.blocks[-1] is toy.blocks[1]
    assert list(toy.blocks) == [toy.blocks[0], toy.blocks[1]]
    modules = dict(toy.named_modules())
    assert list(modules) == ["", "first", "blocks", "blocks.0", "blocks.1", "dropout"]
    assert modules[""] is toy and modules["blocks.1"] is toy.blocks[1]


def test_module_list_names_nest():
    outer = ModuleList([ModuleList([Linear(2, 2)]), Linear(2, 1, bias=False)])
    assert [name for name, _ in outer.named_parameters()] == ["0.0.weight", "0.0.bias", "1.weight"]


# ---- modes and freezing -------------------------------------------------------------------------

def test_train_and_eval_reach_every_module():
    toy = make_toy()
    assert toy.eval() is toy
    assert all(not module.training for _, module in toy.named_modules())
    assert toy.train() is toy
    assert all(module.training for _, module in toy.named_modules())
    toy.blocks.eval()  # a sub-tree only
    assert toy.training and toy.first.training
    assert not toy.blocks.training and not toy.blocks[0].training and not toy.blocks[1].training


def test_eval_turns_dropout_off():
    toy = make_toy()
    x = backend.host_normal((8, 3), 1.0)
    toy.eval()
    assert xp.array_equal(toy(x).data, toy(x).data)
    toy.train()
    assert not xp.array_equal(toy(x).data, toy(x).data)  # two different dropout masks


def test_num_parameters_counts_total_and_trainable():
    toy = make_toy()
    total = 4 * 3 + 4 + 4 * 4 + 4 + 4 + 1
    assert toy.num_parameters() == total
    assert toy.num_parameters(trainable_only=True) == total
    toy.requires_grad_(False)
    assert toy.num_parameters() == total
    assert toy.num_parameters(trainable_only=True) == 0
    toy.blocks.requires_grad_(True)
    assert toy.num_parameters(trainable_only=True) == 4 * 4 + 4 + 4
    assert {id(p) for p in toy.trainable_parameters()} == {id(p) for p in toy.blocks.parameters()}


def test_frozen_parameters_get_no_gradient():
    toy = make_toy().eval()
    assert toy.first.requires_grad_(False) is toy.first
    assert all(not p.requires_grad for p in toy.first.parameters())
    toy(backend.host_normal((5, 3), 1.0)).sum().backward()
    grads = {name: p.grad for name, p in toy.named_parameters()}
    assert grads["first.weight"] is None and grads["first.bias"] is None
    assert all(grads[name] is not None for name in NAMES[2:])


def test_zero_grad_clears_every_gradient():
    toy = make_toy().eval()
    toy(backend.host_normal((5, 3), 1.0)).sum().backward()
    toy.zero_grad()
    assert all(p.grad is None for p in toy.parameters())


# ---- state dicts --------------------------------------------------------------------------------

def test_state_dict_round_trip_copies_values():
    source, target = make_toy(seed=1).eval(), make_toy(seed=2).eval()
    x = backend.host_normal((6, 3), 1.0)
    assert not xp.allclose(source(x).data, target(x).data)
    state = source.state_dict()
    assert list(state) == NAMES
    assert state["first.weight"] is source.first.weight.data  # the arrays themselves
    missing, unexpected = target.load_state_dict(state)
    assert missing == [] and unexpected == []
    assert xp.array_equal(source(x).data, target(x).data)
    # the target holds copies: changing the source afterwards leaves it alone
    source.first.weight.data[...] = 0.0
    assert not xp.array_equal(target.first.weight.data, source.first.weight.data)


def test_load_state_dict_accepts_host_arrays_and_keeps_float32():
    source, target = make_toy(seed=1), make_toy(seed=2)
    state = {name: backend.to_numpy(array).astype("float64") for name, array in source.state_dict().items()}
    target.load_state_dict(state)
    for name, p in target.named_parameters():
        assert p.dtype == xp.float32, name
        assert backend.is_array(p.data), name
        assert xp.array_equal(p.data, source.state_dict()[name]), name


def test_load_state_dict_names_missing_keys():
    target = make_toy(seed=2)
    state = make_toy(seed=1).state_dict()
    del state["blocks.1.bias"], state["scale"]
    with pytest.raises(KeyError) as error:
        target.load_state_dict(state)
    message = str(error.value)
    assert "missing" in message and "blocks.1.bias" in message and "scale" in message


def test_load_state_dict_names_unexpected_keys():
    target = make_toy(seed=2)
    state = make_toy(seed=1).state_dict()
    state["head.weight"] = xp.zeros((2, 4), dtype=xp.float32)
    with pytest.raises(KeyError) as error:
        target.load_state_dict(state)
    message = str(error.value)
    assert "unexpected" in message and "head.weight" in message


def test_load_state_dict_names_mis_shaped_keys_with_both_shapes():
    target = make_toy(seed=2)
    state = make_toy(seed=1).state_dict()
    state["first.weight"] = xp.zeros((3, 4), dtype=xp.float32)  # transposed by mistake
    for strict in (True, False):  # a wrong shape is never silently skipped
        with pytest.raises(KeyError) as error:
            target.load_state_dict(state, strict=strict)
        message = str(error.value)
        assert "first.weight" in message and "(4, 3)" in message and "(3, 4)" in message


def test_failed_load_changes_nothing():
    target = make_toy(seed=2)
    before = {name: array.copy() for name, array in target.state_dict().items()}
    state = make_toy(seed=1).state_dict()
    state["scale"] = xp.zeros(2, dtype=xp.float32)
    with pytest.raises(KeyError):
        target.load_state_dict(state)
    assert all(xp.array_equal(before[name], p.data) for name, p in target.named_parameters())


def test_non_strict_load_returns_missing_and_unexpected_and_loads_the_rest():
    source, target = make_toy(seed=1), make_toy(seed=2)
    state = source.state_dict()
    kept_scale = target.scale.data.copy()
    del state["scale"]
    state["extra.weight"] = xp.zeros(3, dtype=xp.float32)
    missing, unexpected = target.load_state_dict(state, strict=False)
    assert missing == ["scale"] and unexpected == ["extra.weight"]
    assert xp.array_equal(target.first.weight.data, source.first.weight.data)
    assert xp.array_equal(target.scale.data, kept_scale)


def test_linear_matches_its_formula():
    manual_seed(0)
    layer = Linear(3, 2)
    layer.bias.data[...] = xp.asarray([0.5, -1.0], dtype=xp.float32)
    x = backend.host_normal((4, 3), 1.0)
    expected = x @ layer.weight.data.T + layer.bias.data
    assert xp.allclose(layer(x).data, expected, atol=1e-6)
    assert xp.allclose(F.linear(x, layer.weight, layer.bias).data, expected, atol=1e-6)
