"""The one table of methods (tinymix/methods.py): both tasks take their methods, default rates and
shared checks from it, so a method added there is available to `train` and `train --task e2e`."""
import pytest

from tinymix import methods, peft
from tinymix.cli import parser
from tinymix.e2e.finetune import NLGConfig
from tinymix.train import TrainConfig


def test_every_method_builds_a_config_peft_knows_and_has_a_rate_per_task():
    for name, method in methods.METHODS.items():
        assert method.build(methods.Settings()).method in {**peft.CONFIGS, **peft.NEIGHBOURS}
        assert method.lr and all(rate > 0 for rate in method.lr.values())
        # AdaMix's two passes and consistency loss: its own methods, and AdaMix over a neighbour's module
        # (MixPHM mixes too, but trains in one pass with its own regulariser)
        assert method.two_passes == name.startswith("adamix")
    assert methods.names(methods.E2E) == ("adamix", "adamix-lora", "adapter", "lora", "full", "adalora", "hadamard",
                                          "adamix-hadamard", "loretta-rep", "prefix", "ft-top2")


def test_a_new_entry_is_a_method_of_both_tasks_and_of_the_command_line(monkeypatch):
    tiny_lora = methods.Method("tiny-lora", "LoRA r=1", lambda s: peft.LoRAConfig(1, s.lora_alpha),
                               {methods.CLASSIFICATION: 2e-3, methods.E2E: 5e-3})
    monkeypatch.setitem(methods.METHODS, "tiny-lora", tiny_lora)
    classification, e2e = TrainConfig(method="tiny-lora"), NLGConfig(method="tiny-lora")
    assert methods.peft_config(classification).rank == 1 and methods.peft_config(e2e).rank == 1
    assert methods.learning_rate(classification, "classification") == 2e-3
    assert methods.learning_rate(e2e, "e2e") == 5e-3 and methods.consistency_weight(e2e) == 0.0
    assert ", tiny-lora)" in " ".join(parser.build_parser().format_help().split())   # train's methods


def test_a_method_of_one_task_only_is_refused_by_the_other():
    assert "bitfit" in methods.names(methods.CLASSIFICATION)
    with pytest.raises(ValueError, match="--method must be one of adamix, adamix-lora, adapter, lora, full, .*; "
                                         "got 'bitfit'"):
        NLGConfig(method="bitfit")


def test_the_shared_settings_are_checked_once_for_both_tasks():
    for config in (TrainConfig, NLGConfig):
        with pytest.raises(ValueError, match=r"--warmup must be a number in \[0, 1\]"):
            config(warmup=2.0)
        with pytest.raises(ValueError, match=r"--num-experts must be an integer in \[1, 64\]"):
            config(num_experts=0)
