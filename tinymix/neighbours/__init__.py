"""The parameter-efficient methods AdaMix is compared with, each on tinymix's own engine and in the
shape of peft.py: a Config dataclass, Module classes, `inject(model, config)` that freezes the base and
places the modules, parameter counts, and merge/unmerge where the method allows it.

    adalora.py    AdaLoRA (Zhang et al., ICLR 2023): an SVD-form LoRA whose rank budget moves to the
                  matrices that matter, by importance scores and a cubic schedule
    hadamard.py   the Hadamard adapter (Chen et al., CIKM 2023): w * h + b on each attention output,
                  and the same module as AdaMix experts, whose average merges exactly
"""
