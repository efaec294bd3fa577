"""Lesson 07's exercises: counting AdaMix-LoRA, and the memory full fine-tuning adds."""
from exercises import Exercise, integer, number


def _trainable(method):
    """Trainable parameters of a MiniLM-shaped classifier with `method`, counted by the library
    (the vocabulary is kept tiny: frozen embeddings do not count)."""
    from tinymix import peft
    from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig
    model = peft.get_peft_model(SequenceClassifier(Transformer(TransformerConfig(vocab_size=8)), 2), method)
    return model.num_parameters(trainable_only=True)


def _full_fine_tuning_megabytes():
    from tinymix import peft
    from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig
    model = peft.get_peft_model(SequenceClassifier(Transformer(TransformerConfig()), 2), peft.FullFineTuneConfig())
    return 3 * 4 * model.num_parameters(trainable_only=True) / 1e6


def _adamix_lora_m8_r8():
    from tinymix import peft
    return _trainable(peft.AdaMixConfig(module="lora", num_experts=8, lora=peft.LoRAConfig(rank=8)))


EXERCISES = {
    "07.1": Exercise(
        task="parameters AdaMix-LoRA trains with M = 8, r = 8, on query and value",
        verify=lambda answer: integer(answer, _adamix_lora_m8_r8(), "trained parameters"),
        hint="per layer and per projection: 8 A's of r x C and one B of C x r; two projections, "
             "six layers, plus the head (C * 2 + 2)"),
    "07.2": Exercise(
        task="megabytes of gradients and Adam moments for full fine-tuning",
        verify=lambda answer: number(answer, _full_fine_tuning_megabytes(), "megabytes", rel=0.01),
        hint="three float32 arrays (gradient, first and second moment) per trained parameter, 4 bytes each"),
}
