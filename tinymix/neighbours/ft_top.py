"""FT-Top2: fine-tune only the top k Transformer layers (k = 2 by default) and the task head, everything
below frozen: the GPT-2 table's FT^Top2 baseline (Li and Liang 2021, repeated by Hu et al. 2021 and by
the AdaMix paper), a partial fine-tuning with no new module at all.

    model = inject(LanguageModel(gpt), FTTopConfig())                 # or a SequenceClassifier
    count(model)      # (trainable, deployed): the same, nothing to merge

Trained: every parameter of the last k layers (attention, FFN, both LayerNorms), the decoder's final
LayerNorm (it sits above the top layer) and a classifier head where there is one. Frozen: the
embeddings and every lower layer. On MiniLM's shape: 2 x 1,774,464 + 770 = 3,549,698 trainable; on the
tiny GPT: 2 x 198,272 + 256 = 396,800.

Deviations, and why:
- Li and Liang's code (tuning mode "finetune-top", top_layers=2) also unfreezes GPT-2's word
  embeddings, which its LM head shares; the 25.19M parameters reported for GPT-2 medium are exactly
  two layers and the final LayerNorm, without them, and that is what is built here (train_embeddings
  puts them back: the tied embeddings then train as head and input alike).
- Nothing to merge: the deployed model is a full copy of the base with its top k layers replaced, so
  "deployed" counts the same parameters as "trainable".
"""
from dataclasses import dataclass

from .. import peft


@dataclass
class FTTopConfig:
    num_layers: int = 2              # k, the top layers trained
    train_embeddings: bool = False   # also the word embeddings (tied to a decoder's LM head)
    method = "ft_top"


def inject(model, config):
    """Freeze the model except its top `num_layers` layers, the decoder's final LayerNorm and the task
    head; in place. Returns the model."""
    peft.require_fresh(model)
    transformer = peft._transformer(model)
    layers = len(transformer.layers)
    if not 1 <= config.num_layers <= layers:
        raise ValueError(f"num_layers must be between 1 and the model's {layers} layers, got {config.num_layers}")
    model.requires_grad_(False)
    for block in list(transformer.layers)[layers - config.num_layers:]:
        block.requires_grad_(True)
    if transformer.config.kind == "decoder":
        transformer.final_norm.requires_grad_(True)
    if config.train_embeddings:
        transformer.word_embeddings.requires_grad_(True)
    if hasattr(model, "classifier"):
        model.classifier.requires_grad_(True)
    model.peft_config, model.peft_merged = config, False
    return model


def count(model):
    """(trainable parameters, deployed trainable parameters): the same, there is nothing to merge."""
    trainable = model.num_parameters(trainable_only=True)
    return trainable, trainable
