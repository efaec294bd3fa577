"""A correct A5, written as a student would, with Tensor and functional. The grader's tests use it."""
from tinymix import functional as F
from tinymix.backend import xp
from tinymix.tensor import stack


def stochastic_route(num_experts, rng):
    return int(rng.integers(num_experts))


def average_experts(weights):
    return stack(weights).mean(axis=0)


def symmetric_kl(p_logits, q_logits):
    def kl(target, source):
        log_t, log_s = F.log_softmax(target.detach()), F.log_softmax(source)
        return (log_t.exp() * (log_t - log_s)).sum(axis=-1).mean()
    return (kl(q_logits, p_logits) + kl(p_logits, q_logits)) * 0.5


def adamix_loss(logits_1, logits_2, targets, consistency_weight):
    return F.cross_entropy(logits_1, targets) + symmetric_kl(logits_1, logits_2) * consistency_weight


def merge_experts(expert_weights, expert_biases):
    weight = xp.stack(expert_weights).mean(axis=0)
    return weight, None if expert_biases is None else xp.stack(expert_biases).mean(axis=0)
