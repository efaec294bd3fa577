"""Lesson 05's exercises: the size of the attention weights, and the causal mask."""
from exercises import Exercise, Wrong, array, integer


def _attention_weight_bytes(B=32, T=128):
    """Bytes of one layer's attention weights, measured on the library's own softmax of a
    MiniLM-shaped score array (B, H, T, T) in float32."""
    from tinymix import Tensor, no_grad
    from tinymix import functional as F
    from tinymix.backend import xp
    heads = 12
    with no_grad():
        weights = F.softmax(Tensor(xp.zeros((B, heads, T, T), dtype=xp.float32)), axis=-1)
    return int(weights.data.nbytes)


def _verify_causal_bias(causal_bias):
    from tinymix.backend import xp
    from tinymix.transformer import Transformer, TransformerConfig
    for T in (1, 4, 7):
        decoder = Transformer(TransformerConfig(kind="decoder", vocab_size=4, hidden_size=8, num_layers=1,
                                                num_heads=2, intermediate_size=8, max_positions=8))
        expected = decoder._mask_bias(1, T, None)[0, 0]
        got = xp.asarray(causal_bias(T))
        if got.dtype != xp.float32:
            raise Wrong(f"the bias should be float32 (it is added to float32 scores), got {got.dtype}")
        array(got, expected, f"causal_bias({T})", atol=0.0, rtol=0.0)


EXERCISES = {
    "05.1": Exercise(
        task="bytes of one MiniLM layer's attention weights at B = 32, T = 128",
        verify=lambda answer: integer(answer, _attention_weight_bytes(), "bytes"),
        hint="the weights have shape (B, H, T, T) and a float32 takes 4 bytes"),
    "05.2": Exercise(
        task="causal_bias(T) -> (T, T) float32",
        verify=_verify_causal_bias,
        hint="key j is in query i's future when j > i: xp.triu(..., k=1) marks those; "
             "xp.where(future, -1e9, 0.0).astype(xp.float32)"),
}
