"""Lesson 17's exercises: PEFT's names, and why an AdaMix-LoRA with a shared B is one LoRA."""
from exercises import Exercise, Sealed, Wrong, array, choice


def _verify_peft_key(peft_key):
    from tinymix.export import peft_export
    for layer, target, side in ((0, "query", "A"), (5, "value", "B"), (3, "value", "A")):
        expected = f"{peft_export.PREFIX}encoder.layer.{layer}.{peft_export.BERT_NAMES[target]}.lora_{side}.weight"
        got = peft_key(layer, target, side)
        if got != expected:
            raise Wrong(f"peft_key({layer}, {target!r}, {side!r}) gave {got!r}")


def _verify_update(deployed_update):
    from tinymix import backend
    rng = backend.host_generator(17)
    M, r, d_in, d_out, alpha = 4, 3, 7, 5, 8.0
    A = [backend.from_numpy(rng.standard_normal((r, d_in))) for _ in range(M)]
    B = backend.from_numpy(rng.standard_normal((d_out, r)))
    each = [(alpha / r) * (B @ a) for a in A]
    array(deployed_update(A, B, alpha, r), sum(each) / M, "the deployed update", atol=1e-9)


# The right letters of the multiple-choice exercises, sealed (exercises.seal); the answer key
# is tests/lesson_exercise_answers.py.
RIGHT_17_3 = Sealed("17.3", ("1593e3a08a376ac3",))

EXERCISES = {
    "17.1": Exercise(
        task="peft_key(layer, target, side) -> the key in adapter_model.safetensors",
        verify=_verify_peft_key,
        hint="PeftModel wraps the BertModel twice (base_model.model.), then BERT's module path "
             "encoder.layer.N.attention.self.query, then lora_A.weight or lora_B.weight"),
    "17.2": Exercise(
        task="deployed_update(A_experts, B, alpha, r) -> (out, in) array",
        verify=_verify_update,
        hint="B is shared, so mean_k (alpha / r) B A_k = (alpha / r) B mean_k(A_k): average the A's first"),
    "17.3": Exercise(
        task='answer = "a", "b" or "c"',
        verify=lambda answer: choice(answer, RIGHT_17_3, "when the mean of the updates is one LoRA"),
        hint="mean(B) mean(A) expands into (1/M^2) sum over all PAIRS B_j A_k; the mean of the updates "
             "has only the pairs j = k. They agree when the cross terms happen to match, e.g. identical experts"),
}
