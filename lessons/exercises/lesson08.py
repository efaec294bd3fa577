"""Lesson 08's exercises: the directions an adapter can move, and counting Houlsby adapters."""
from exercises import Exercise, Wrong, integer


def _verify_directions(branch_directions):
    from tinymix import Tensor, backend
    from tinymix.backend import xp
    from tinymix.nn import Linear
    from tinymix.peft import Adapter
    C, r = 24, 5
    backend.manual_seed(8)
    adapter = Adapter(Linear(C, r, std=0.3), Linear(r, C, std=0.3))
    basis = xp.asarray(backend.to_numpy(branch_directions(adapter)), dtype=xp.float64)
    if basis.ndim != 2 or basis.shape[0] != C or not 1 <= basis.shape[1] <= r:
        raise Wrong(f"expected a (C, k) array with C = {C} and k <= r = {r}, got shape {tuple(basis.shape)}")
    q, _ = xp.linalg.qr(basis)
    for trial in range(3):
        point = backend.host_normal((C,), 1.0)
        rows = []
        for i in range(C):
            x = Tensor(point[None], requires_grad=True)
            (adapter(x) - x)[0, i].backward()
            rows.append(x.grad[0])
        jacobian = xp.stack(rows).astype(xp.float64)
        rest = jacobian - q @ (q.T @ jacobian)
        share = float(xp.sqrt((rest ** 2).sum() / (jacobian ** 2).sum()))
        if share > 1e-4:
            raise Wrong(f"at a random input, {share:.0%} of the branch's Jacobian lies outside your columns")


def _houlsby_r8():
    from tinymix import peft
    from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig
    model = peft.get_peft_model(SequenceClassifier(Transformer(TransformerConfig(vocab_size=8)), 2),
                                peft.AdapterConfig(bottleneck=8, placement="houlsby"))
    return model.num_parameters(trainable_only=True) - (384 * 2 + 2)


EXERCISES = {
    "08.1": Exercise(
        task="branch_directions(adapter) -> a (C, k) array spanning the branch's directions",
        verify=_verify_directions,
        hint="db/dh = U diag(GELU'(...)) D: every column is a combination of the columns of U, "
             "the up-projection's weight (C, r)"),
    "08.2": Exercise(
        task="adapter parameters in MiniLM with Houlsby placement and r = 8",
        verify=lambda answer: integer(answer, _houlsby_r8(), "adapter parameters"),
        hint="one adapter is 2 C r + r + C; Houlsby puts two in each of the six layers"),
}
