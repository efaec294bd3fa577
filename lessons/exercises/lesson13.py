"""Lesson 13's exercises: a mixture's average mode by hand, and when weight averaging is exact."""
from exercises import Exercise, array, choice


def _average_output():
    from tinymix import Tensor, adamix, no_grad
    from tinymix.backend import xp
    from tinymix.nn import Linear, Parameter
    experts = []
    for weight, bias in (([[1.0, 2.0], [3.0, 4.0]], [1.0, 0.0]), ([[0.0, 2.0], [1.0, 0.0]], [-1.0, 2.0])):
        layer = Linear(2, 2)
        layer.weight, layer.bias = Parameter(xp.asarray(weight, dtype=xp.float32)), Parameter(xp.asarray(bias, dtype=xp.float32))
        experts.append(layer)
    mixture = adamix.Mixture(experts).eval()
    with no_grad():
        return mixture(Tensor([[1.0, 1.0]])).data[0]


def _exact_cases():
    """The letters of the cases whose average-mode output equals the mean of the M fixed-expert
    outputs, measured with the library on random, spread experts."""
    from tinymix import Tensor, adamix, backend, no_grad
    from tinymix.nn import Linear, Parameter
    from tinymix.peft import Adapter, LoRALinear
    C, r, M = 12, 3, 3
    backend.manual_seed(13)

    def linear(shape):
        layer = Linear(shape[1], shape[0], bias=False)
        layer.weight = Parameter(backend.host_normal(shape, 0.5))
        return layer

    def maybe_mixed(mixed, shape):
        return adamix.make_mixture(lambda: linear(shape), M) if mixed else linear(shape)

    cases = {
        "a": LoRALinear(Linear(C, C), maybe_mixed(True, (r, C)), maybe_mixed(False, (C, r)), 4.0, r, 0.0),
        "b": LoRALinear(Linear(C, C), maybe_mixed(False, (r, C)), maybe_mixed(True, (C, r)), 4.0, r, 0.0),
        "c": LoRALinear(Linear(C, C), maybe_mixed(True, (r, C)), maybe_mixed(True, (C, r)), 4.0, r, 0.0),
        "d": Adapter(adamix.make_mixture(lambda: Linear(C, r, std=0.5), M), Linear(r, C, std=0.5)),
    }
    x = Tensor(backend.host_normal((8, C), 1.0))
    exact = ""
    for letter, site in cases.items():
        site.eval()
        with no_grad():
            adamix.set_inference_mode(site, "average")
            averaged = site(x).data
            outputs = []
            for k in range(M):
                adamix.set_inference_mode(site, "fixed", k)
                outputs.append(site(x).data)
        ensemble = sum(outputs) / M
        if float(abs(averaged - ensemble).max()) < 1e-4 * float(abs(ensemble).max()):
            exact += letter
    return exact


EXERCISES = {
    "13.1": Exercise(
        task="the average-mode output for x = [1, 1]",
        verify=lambda answer: array(answer, _average_output(), "the output", atol=1e-5),
        hint="average the weights and the biases first, then apply ONE Linear: mean(W) x + mean(b)"),
    "13.2": Exercise(
        task="the letters of the cases where weight averaging equals the ensemble",
        verify=lambda answer: choice(answer, _exact_cases(), "exact cases"),
        hint="it is exact when the output is LINEAR in the one mixed factor: mean_i(B A_i) = B mean_i(A_i), "
             "and mean_i(B_i A) = mean_i(B_i) A; a product of two means, or a GELU, is not"),
}
