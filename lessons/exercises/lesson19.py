"""Lesson 19's exercises: AdaLoRA's budget at one step, what a deployed allocation holds, masking."""
from exercises import Exercise, Sealed, choice, integer


def _model(init_r, target_r, hidden, **schedule):
    """A SequenceClassifier of six layers with AdaLoRA on query and value (12 matrices)."""
    from tinymix import backend
    from tinymix.neighbours import adalora
    from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig
    backend.manual_seed(19)
    config = TransformerConfig(vocab_size=1, hidden_size=hidden, num_layers=6, num_heads=4,
                               intermediate_size=4 * hidden, max_positions=8)
    adalora_config = adalora.AdaLoRAConfig(init_r=init_r, target_r=target_r, **schedule)
    return adalora.inject(SequenceClassifier(Transformer(config), 2), adalora_config), adalora_config


def _budget_at(step):
    """The library's schedule for b0 = 72, bT = 48, T = 200, tinit 10, tfinal 40."""
    from tinymix.neighbours import adalora
    model, config = _model(6, 4, 16, total_step=200, tinit=10, tfinal=40)
    return adalora.RankAllocator(model, config).budget(step)[0]


def _deployed(kept_in_all):
    """adalora.count on MiniLM's matrices (384 x 384) with `kept_in_all` triplets kept, head excluded."""
    from tinymix.neighbours import adalora
    model, _ = _model(6, 4, 384, total_step=10)
    left = kept_in_all
    for _, layer in adalora.svd_layers(model):     # any split of the triplets gives the same count here
        layer.kept = layer.kept.copy()
        layer.kept[:] = False
        layer.kept[:min(left, layer.rank)] = True
        left -= min(left, layer.rank)
    return adalora.count(model)[1] - model.classifier.num_parameters()


# The right letters of the multiple-choice exercise, sealed (exercises.seal); the answer key is
# tests/lesson_exercise_answers.py.
RIGHT_19_3 = Sealed("19.3", ("2428070800c76b8a", "ec0a2928e8e388d7"))

EXERCISES = {
    "19.1": Exercise(
        task="the budget b(85) for b0 72, bT 48, T 200, tinit 10, tfinal 40",
        verify=lambda answer: integer(answer, _budget_at(85), "the budget"),
        hint="the middle phase: 1 - (t - tinit) / (T - tinit - tfinal) = 1 - 75/150; cube it, scale b0 - bT, "
             "add bT, and round down"),
    "19.2": Exercise(
        task="the numbers a deployed 48-triplet AdaLoRA holds on MiniLM's query and value",
        verify=lambda answer: integer(answer, _deployed(48), "the deployed numbers"),
        hint="each kept triplet is a column of P (out numbers), one lambda and a row of Q (in numbers)"),
    "19.3": Exercise(
        task="the letters of what happens to a triplet masked in the middle phase",
        verify=lambda answer: choice(answer, RIGHT_19_3, "what masking does"),
        hint="masking only zeroes lambda; the scores keep being updated until the final allocation, and "
             "after it every step masks the same triplets again"),
}
