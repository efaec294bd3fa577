"""The parameter-efficient methods AdaMix is compared with, each on tinymix's own engine and in the
shape of peft.py: a Config dataclass, Module classes, `inject(model, config)` that freezes the base and
places the modules, parameter counts, and merge/unmerge where the method allows it.

    adalora.py    AdaLoRA (Zhang et al., ICLR 2023): an SVD-form LoRA whose rank budget moves to the
                  matrices that matter, by importance scores and a cubic schedule
    phm.py        PHM layers (sums of Kronecker products), the PHM adapter, and MixPHM (Jiang and Zheng,
                  CVPR 2023): AdaMix's random routing over PHM up-projections, a shared down-projection,
                  and the redundancy regulariser
    hadamard.py   the Hadamard adapter (Chen et al., CIKM 2023): w * h + b on each attention output,
                  and the same module as AdaMix experts, whose average merges exactly
    loretta.py    LoRETTA (Yang et al., NAACL 2024): tensor-train linear layers, LoRA with TT factors
                  (LoRETTA_rep) and TT adapters (LoRETTA_adp)
    prefix.py     prefix-tuning (Li and Liang, ACL 2021): learned keys and values in every layer, trained
                  through an MLP that deployment replaces by its output
    ft_top.py     FT-Top2: fine-tuning only the top layers and the head
    unipelt.py    UniPELT (Mao et al., ACL 2022): a prefix, an adapter and LoRA, each behind a learned
                  gate per example and layer; not mergeable

Not here: HUT (Zhang, Zhou and Chen, 2024, "Hadamard Updated Transformation"), which replaces W + dW by
W' = T(W) built from Hadamard products of W with two low-rank matrices. Its exact form (where the two
factors sit, and what makes T(W) = W at the start) is in the paper's method section, which could not be
read here (only its abstract and summaries), and no official code is public. One plausible reading,
W' = W * (1 + B A), is a different method if the paper means another; building a guess and calling it
HUT would teach the guess. It is built once its formula is confirmed from the paper itself.
"""

from .. import peft
from . import adalora, ft_top, hadamard, loretta, phm, prefix, unipelt

# What peft.py dispatches a neighbour's config to, registered on import (methods.py imports this package):
# {config.method: (its config class, its module, its deploy or None)}. Each module offers inject(model,
# config) and count(model) -> (trainable, deployed). A deploy turns the trained model into the deployed
# one in place, keeping every trained number a trainable parameter (so save_adapter writes it and
# load_adapter reads it back): prefix-tuning and UniPELT drop the prefix MLP, MixPHM averages its
# experts' factors, AdaMix-Hadamard averages its experts into one Hadamard, AdaLoRA zeroes the triplets its final allocation dropped. Folding into frozen weights
# (the Hadamard adapter, AdaLoRA) is left out: a saved adapter holds only the trainable weights.
peft.NEIGHBOURS.update({config.method: (config, module, deploy) for config, module, deploy in (
    (adalora.AdaLoRAConfig, adalora, adalora.deploy), (phm.PHMAdapterConfig, phm, None),
    (phm.MixPHMConfig, phm, phm.merge), (hadamard.HadamardConfig, hadamard, hadamard.deploy),
    (loretta.LorettaRepConfig, loretta, None), (loretta.LorettaAdpConfig, loretta, None),
    (prefix.PrefixTuningConfig, prefix, prefix.deploy), (ft_top.FTTopConfig, ft_top, None),
    (unipelt.UniPELTConfig, unipelt, unipelt.deploy))})
