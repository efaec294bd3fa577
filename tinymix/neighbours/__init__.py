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
"""


def registry():
    """{config.method: (its config class, its module)}: what peft.py dispatches a neighbour's config to.
    Each module offers inject(model, config) and count(model) -> (trainable, deployed); `deploy`, where
    it has one, turns the trained model into the deployed one in place, keeping every trained number a
    trainable parameter (so save_adapter writes it and load_adapter reads it back): prefix-tuning and
    UniPELT drop the prefix MLP, MixPHM averages its experts' factors, AdaLoRA zeroes the
    triplets its final allocation dropped. Folding into frozen weights (the Hadamard adapter, AdaLoRA)
    is left out of it: a saved adapter holds only the trainable weights."""
    from . import adalora, ft_top, hadamard, loretta, phm, prefix, unipelt
    configs = ((adalora.AdaLoRAConfig, adalora), (phm.PHMAdapterConfig, phm), (phm.MixPHMConfig, phm),
               (hadamard.HadamardConfig, hadamard), (loretta.LorettaRepConfig, loretta),
               (loretta.LorettaAdpConfig, loretta), (prefix.PrefixTuningConfig, prefix),
               (ft_top.FTTopConfig, ft_top), (unipelt.UniPELTConfig, unipelt))
    return {config.method: (config, module) for config, module in configs}


# config.method -> the function of its module that peft.merge calls first
DEPLOY = {"prefix": "deploy", "unipelt": "deploy", "mixphm": "merge", "adalora": "deploy"}
