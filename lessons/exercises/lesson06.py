"""Lesson 06's exercises: the renaming table, and where MiniLM's parameters are."""
from exercises import Exercise, Wrong, number


def _verify_name(answer):
    from tinymix.pretrained import bert_state_dict
    if not isinstance(answer, str):
        raise Wrong(f"give the name as a string, got {answer!r}")
    renamed = list(bert_state_dict({answer: None}))
    if renamed != ["layers.2.intermediate.weight"]:
        raise Wrong(f"{answer!r} becomes {renamed[0] if renamed else 'nothing (it is dropped)'!r}")


def _embedding_fraction():
    from tinymix.transformer import Transformer, TransformerConfig
    model = Transformer(TransformerConfig())          # the defaults are MiniLM's shape
    tables = sum(p.size for name, p in model.named_parameters() if name.endswith("embeddings.weight"))
    return tables / model.num_parameters()


EXERCISES = {
    "06.1": Exercise(
        task="the Hugging Face name of layers.2.intermediate.weight",
        verify=_verify_name,
        hint="BERT's feed-forward input layer is encoder.layer.N.intermediate.dense (see _BERT_RENAMES)"),
    "06.2": Exercise(
        task="the fraction of MiniLM's parameters in its embedding tables",
        verify=lambda answer: number(answer, _embedding_fraction(), "the fraction", rel=0.02),
        hint="(30522 + 512 + 2) rows of 384, against the total the lesson printed"),
}
