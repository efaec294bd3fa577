"""Lesson 12's exercises: the forward passes of a step, and what the replay must reproduce."""
from exercises import Exercise, Sealed, choice, integer


def _passes(consistency_weight, low_memory):
    """Forward passes of one two_pass_backward step on a tiny AdaMix model, counted."""
    from tinymix import adamix, backend, peft
    from tinymix import functional as F
    from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig
    backend.manual_seed(0)
    config = TransformerConfig(vocab_size=20, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                               max_positions=8)
    model = peft.get_peft_model(SequenceClassifier(Transformer(config), 2), peft.AdaMixConfig()).train()
    ids = backend.host_generator(0).integers(1, 20, size=(2, 5))
    calls = []

    def forward():
        calls.append(1)
        return model(ids)
    adamix.two_pass_backward(forward, lambda z: F.cross_entropy(z, [0, 1]), consistency_weight, low_memory=low_memory)
    return len(calls)


# The right letters of the multiple-choice exercises, sealed (exercises.seal); the answer key
# is tests/lesson_exercise_answers.py.
RIGHT_12_2 = Sealed("12.2", ("683298aa826092d7", "aa0169bd9c30250e", "b58514a3ab29d2a5"))

EXERCISES = {
    "12.1": Exercise(
        task="forward passes of a low-memory step with consistency weight 0",
        verify=lambda answer: integer(answer, _passes(0.0, low_memory=True), "forward passes"),
        hint="with weight 0 there is no pass 2 to keep, so there is nothing to recompute "
             "(read the first lines of two_pass_backward)"),
    "12.2": Exercise(
        task="the letters of the changes that would make the gradients differ",
        verify=lambda answer: choice(answer, RIGHT_12_2, "what breaks the replay"),
        hint="the replay must compute exactly the z2 whose gradient step 3 took: same routes, same "
             "masks, same weights; running pass 2 once without a graph is the method itself"),
}
