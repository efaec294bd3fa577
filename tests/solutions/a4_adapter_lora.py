"""A correct A4, written as a student would, with Tensor and functional. The grader's tests use it."""
from tinymix import functional as F


def adapter_forward(h, params):
    down = F.linear(h, params["down.weight"], params["down.bias"])
    return h + F.linear(F.gelu(down), params["up.weight"], params["up.bias"])


def lora_forward(x, params, scaling):
    update = F.linear(F.linear(x, params["lora_A.weight"]), params["lora_B.weight"])
    return F.linear(x, params["base.weight"], params["base.bias"]) + update * scaling


def lora_merge(weight, lora_A, lora_B, scaling):
    return weight + scaling * (lora_B @ lora_A)


def lora_unmerge(merged_weight, lora_A, lora_B, scaling):
    return merged_weight - scaling * (lora_B @ lora_A)
