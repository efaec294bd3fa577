"""Lesson 00's exercises: counting an AdaMix model's parameters, before and after merging."""
from exercises import Exercise, Sealed, choice, integer


def _minilm_shaped(num_experts, merged):
    """Trainable parameters of a MiniLM-shaped AdaMix-adapter classifier (the vocabulary does not
    matter: embeddings are frozen), counted by the library."""
    from tinymix import peft
    from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig
    config = TransformerConfig(kind="encoder", vocab_size=8, hidden_size=384, num_layers=6, num_heads=12,
                               intermediate_size=1536, max_positions=8)
    model = peft.get_peft_model(SequenceClassifier(Transformer(config), 2),
                                peft.AdaMixConfig(module="adapter", num_experts=num_experts))
    if merged:
        peft.merge(model)
    return model.num_parameters(trainable_only=True)


# The right letters of the multiple-choice exercises, sealed (exercises.seal); the answer key
# is tests/lesson_exercise_answers.py.
RIGHT_00_3 = Sealed("00.3", ("1e0528c109764764", "682b3220365dec1b", "69697d028fec1c52"))

EXERCISES = {
    "00.1": Exercise(
        task="the number of parameters trained with M = 8 experts per layer",
        verify=lambda answer: integer(answer, _minilm_shaped(8, merged=False), "trained parameters with M = 8"),
        hint="per layer: M down-projections (C r + r each) and ONE shared up-projection (r C + C); "
             "six layers, plus the head (C * 2 + 2)"),
    "00.2": Exercise(
        task="the number of trainable parameters left after merging the M = 8 model",
        verify=lambda answer: integer(answer, _minilm_shaped(8, merged=True), "parameters after merging"),
        hint="merging replaces each mixture by ONE Linear: how many experts are left per layer?"),
    "00.3": Exercise(
        task="the letters of the true statements about the two-pass loss",
        verify=lambda answer: choice(answer, RIGHT_00_3, "statements about the two-pass loss"),
        hint="read adamix.two_pass_loss: which pass does task_loss see, and what happens when the "
             "weight is 0? Two passes through the same weights with no dropout give the same logits."),
}
