"""The same model and the same training step in PyTorch eager, for `python3 -m tinymix bench` to
compare against. PyTorch is optional and never a dependency: without it `load_torch()` says why.

The PyTorch side is written by hand here, op for op like tinymix's encoder (transformer.py) and
AdaMix-adapter (peft.py, adamix.py), rather than taken from a model library, so both sides run the
same computation: BERT embeddings and post-LayerNorm blocks, an adapter mixture on each FFN output
(one expert drawn per projection per pass, the up-projection shared), mean pooling, a linear head,
and the two-pass loss CE(z1, y) + lambda * symKL(z1, z2). Its weights are copied from a tinymix model,
so both start from the same values; `max_logit_difference` checks that they compute the same thing.
Attention is the explicit softmax(q k^T / sqrt(D) + mask) v that tinymix computes, or, with
sdpa=True, PyTorch's fused scaled_dot_product_attention (what Hugging Face's BERT uses by default).
"""
import math
import random
import re

from .. import backend


def load_torch():
    """(the torch module, None), or (None, the reason it cannot be used)."""
    try:
        import torch
    except ImportError:
        return None, "not installed"
    if backend.name == "cupy" and not torch.cuda.is_available():
        return None, f"torch {torch.__version__} is installed without CUDA"
    return torch, None


class TorchTwin:
    """A tinymix SequenceClassifier (an AdaMix-adapter, a single adapter, or none) rebuilt in PyTorch.
    On the cupy backend it runs on CUDA, else on the CPU."""

    def __init__(self, torch, model, sdpa=False, lr=1e-3, weight_decay=0.1, seed=0):
        self.torch, self.sdpa = torch, sdpa
        self.device = "cuda" if backend.name == "cupy" else "cpu"
        config = model.transformer.config
        self.num_heads, self.eps = config.num_heads, config.layer_norm_eps
        self.num_layers, self.dropout = config.num_layers, config.dropout
        self.head_dropout = model.dropout.p
        self.consistency_weight = getattr(getattr(model, "peft_config", None), "consistency_weight", 0.0)
        self.p = {}
        for name, parameter in model.named_parameters():
            # a copy: on the CPU from_numpy would share memory, and each side would train the other's weights
            array = torch.from_numpy(backend.to_numpy_contiguous(parameter.data)).clone().to(self.device)
            self.p[name] = array.requires_grad_(parameter.requires_grad)
        self.trainable = [(n, p) for n, p in self.p.items() if p.requires_grad]
        no_decay = lambda n: n.endswith(".bias") or "norm" in n
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for n, p in self.trainable if not no_decay(n)], "weight_decay": weight_decay},
             {"params": [p for n, p in self.trainable if no_decay(n)], "weight_decay": 0.0}], lr=lr)
        self.routes = random.Random(seed)   # host-side routing, as in tinymix
        self.experts = {}                   # "layers.i.ffn_adapter.down" -> number of experts
        for name in self.p:
            found = re.match(r"(.*)\.experts\.(\d+)\.weight$", name)
            if found:
                self.experts[found[1]] = max(self.experts.get(found[1], 0), int(found[2]) + 1)
        self.training = True

    def _tensor(self, array, dtype):
        return self.torch.as_tensor(backend.to_numpy(array), dtype=dtype, device=self.device)

    def _linear(self, x, prefix):
        """A Linear, or an AdaMix mixture: one random expert in training, the experts' mean in eval."""
        F = self.torch.nn.functional
        count = self.experts.get(prefix)
        if count is None:
            return F.linear(x, self.p[prefix + ".weight"], self.p.get(prefix + ".bias"))
        if self.training:
            k = self.routes.randrange(count)
            return F.linear(x, self.p[f"{prefix}.experts.{k}.weight"], self.p[f"{prefix}.experts.{k}.bias"])
        weight = sum(self.p[f"{prefix}.experts.{k}.weight"] for k in range(count)) / count
        bias = sum(self.p[f"{prefix}.experts.{k}.bias"] for k in range(count)) / count
        return F.linear(x, weight, bias)

    def forward(self, ids, mask):                                     # (B, T), (B, T) -> (B, labels)
        torch, F, p = self.torch, self.torch.nn.functional, self.p
        drop = lambda x, rate: F.dropout(x, rate, self.training)
        B, T = ids.shape
        H = self.num_heads
        t = "transformer."
        x = (p[t + "word_embeddings.weight"][ids] + p[t + "position_embeddings.weight"][:T]
             + p[t + "token_type_embeddings.weight"][0])                                   # (B, T, C)
        C = x.shape[-1]
        D = C // H
        norm = lambda x, name: F.layer_norm(x, (C,), p[name + ".weight"], p[name + ".bias"], self.eps)
        x = drop(norm(x, t + "embedding_norm"), self.dropout)
        mask_bias = (1.0 - mask[:, None, None, :]) * -1e9                                 # (B, 1, 1, T)
        for i in range(self.num_layers):
            layer = f"{t}layers.{i}."
            heads = lambda name: self._linear(x, layer + name).view(B, T, H, D).transpose(1, 2)
            q, k, v = heads("attention.query"), heads("attention.key"), heads("attention.value")  # (B, H, T, D)
            if self.sdpa:
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_bias,
                                                         dropout_p=self.dropout if self.training else 0.0)
            else:
                scores = (q * (1.0 / math.sqrt(D))) @ k.transpose(-1, -2) + mask_bias     # (B, H, T, T)
                weights = drop(torch.softmax(scores, dim=-1), self.dropout)
                context = weights @ v                                                     # (B, H, T, D)
            context = context.transpose(1, 2).reshape(B, T, C)                            # (B, T, C)
            h = drop(self._linear(context, layer + "attention.output"), self.dropout)
            x = norm(x + h, layer + "attention_norm")
            h = self._linear(F.gelu(self._linear(x, layer + "intermediate")), layer + "output")
            if layer + "ffn_adapter.up.weight" in p or layer + "ffn_adapter.up" in self.experts:
                adapter = layer + "ffn_adapter."
                h = h + self._linear(F.gelu(self._linear(h, adapter + "down")), adapter + "up")
            x = norm(x + drop(h, self.dropout), layer + "output_norm")
        pooled = (x * mask[:, :, None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, C)
        return self._linear(drop(pooled, self.head_dropout), "classifier")

    def train_step(self, ids, mask, labels):
        """One training step as tinymix's: two passes (one without consistency), backward, clipping
        at norm 1, AdamW. Nothing is read back to the host."""
        torch, F = self.torch, self.torch.nn.functional
        self.training = True
        ids, mask = self._tensor(ids, torch.int64), self._tensor(mask, torch.float32)
        labels = self._tensor(labels, torch.int64)
        logits_1 = self.forward(ids, mask)
        loss = F.cross_entropy(logits_1, labels)
        if self.consistency_weight:
            logits_2 = self.forward(ids, mask)
            kl = lambda p, q: F.kl_div(F.log_softmax(p, -1), F.softmax(q.detach(), -1), reduction="batchmean")
            loss = loss + self.consistency_weight * 0.5 * (kl(logits_1, logits_2) + kl(logits_2, logits_1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in self.trainable], 1.0)
        self.optimizer.step()

    def predict(self, ids, mask):
        """Eval-mode logits (no dropout, mixtures averaged) as a host array."""
        torch = self.torch
        self.training = False
        with torch.no_grad():
            logits = self.forward(self._tensor(ids, torch.int64), self._tensor(mask, torch.float32))
        return logits.cpu().numpy()

    def synchronize(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()


def max_logit_difference(twin, model, ids, mask):
    """Largest |logit difference| between the twin and the tinymix model in eval mode on one batch."""
    from ..tensor import no_grad
    was_training = model.training
    model.eval()
    with no_grad():
        ours = backend.to_numpy(model(ids, mask).data)
    model.train(was_training)
    return float(abs(twin.predict(ids, mask) - ours).max())
