"""Lesson 18's exercises: a gate's value by hand, what the gates cost, and what folds away."""
import math

from exercises import Exercise, Sealed, choice, integer, number


def _gate_value(scores):
    """The library's Gate on a one-feature sentence whose per-token scores x_t w + b are `scores`."""
    from tinymix import Tensor, no_grad
    from tinymix.backend import xp
    from tinymix.neighbours.unipelt import Gate
    gate = Gate(1)
    gate.linear.weight.data = xp.ones((1, 1), dtype=xp.float32)
    gate.linear.bias.data = xp.zeros(1, dtype=xp.float32)
    with no_grad():
        return float(gate(Tensor([[[s] for s in scores]])).data[0, 0])


def _gate_parameters():
    """The numbers in every Gate of a UniPELT-APL model of MiniLM's shape (a one-word vocabulary: the
    embeddings do not change what the gates hold)."""
    from tinymix import backend
    from tinymix.neighbours import unipelt
    from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig
    backend.manual_seed(18)
    model = unipelt.inject(SequenceClassifier(Transformer(TransformerConfig(vocab_size=1, max_positions=16)), 2),
                           unipelt.UniPELTConfig(modules="APL"))
    gates = {id(m): m for _, m in model.named_modules() if isinstance(m, unipelt.Gate)}
    return sum(m.num_parameters() for m in gates.values())


# The right letters of the multiple-choice exercise, sealed (exercises.seal); the answer key is
# tests/lesson_exercise_answers.py.
RIGHT_18_3 = Sealed("18.3", ("c582c9b32a8c826f", "e973b639bb16eced"))

EXERCISES = {
    "18.1": Exercise(
        task="the gate's value for token scores 0, ln 3, ln 3",
        verify=lambda answer: number(answer, _gate_value([0.0, math.log(3), math.log(3)]), "the gate", abs_=1e-4),
        hint="sigmoid(0) = 1/2 and sigmoid(ln 3) = 3/4; the gate is the MEAN of the three sigmoids"),
    "18.2": Exercise(
        task="the number of parameters in UniPELT-APL's gates on MiniLM",
        verify=lambda answer: integer(answer, _gate_parameters(), "the gates' parameters"),
        hint="each gate is a Linear d -> 1 (d weights and a bias); per layer: one for the prefix, one for "
             "the adapter, one for each LoRA matrix"),
    "18.3": Exercise(
        task="the letters of the modules that fold into the frozen weights",
        verify=lambda answer: choice(answer, RIGHT_18_3, "what folds away"),
        hint="a fixed weight update folds in; a GELU between two projections does not, and neither does "
             "an update scaled by a number that depends on the input — unless that number is constant"),
}
