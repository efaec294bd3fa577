"""Export of the tiny GPT (and of e2e runs fine-tuned from it) as a transformers GPT2LMHeadModel folder
(tinymix/export/gpt_export.py).

Without torch: the folder's files, config fields, tensor names and shapes; the weights read as GPT-2 reads
them (Conv1D x W + b, q, k, v side by side in c_attn, the LM head tied to wte) by a NumPy forward pass
written from GPT-2's definition give tinymix's logits, for the shipped checkpoint (tanh GELU), a decoder
with the exact GELU, and short real e2e runs of every method whose update folds into the weights; what has
no GPT-2 form is refused. With torch and transformers importable (requirements-export.txt, never a
requirement): AutoModelForCausalLM.from_pretrained gives tinymix's next-token logits and the same greedy
tokens, and AutoTokenizer the same ids.
"""
import json
import math

import numpy as np
import pytest

from tinymix import backend, cli, decode, e2e, peft, pretrained
from tinymix.e2e import finetune
from tinymix.export import gpt_export
from tinymix.store import checkpoint, files
from tinymix.tensor import no_grad
from tinymix.transformer import LanguageModel, Transformer, TransformerConfig

pytestmark = pytest.mark.numerics

QUIET = dict(say=lambda line: None)
PROMPTS = ["name The Eagle, type pub, food Italian =>", "Romeo.\n", "The Eagle is",
           "name Clowns, food French, price cheap, area riverside, family no =>"]
TEXTS = PROMPTS + ["  odd   spacing\tand tabs, caf\u00e9 na\u00efve \u65e5\u672c", "<|endoftext|> after the end",
                   "The Cricketers is a coffee shop near The Bakers.<|endoftext|>"]
# every e2e method whose deployed model is the GPT with other weights (gpt_export.FOLDED)
FOLDING = ["lora", "adamix-lora", "adalora", "hadamard", "adamix-hadamard", "loretta-rep", "ft-top2", "full"]
RATES = {"full": 3e-3, "ft-top2": 3e-3}          # others: 3e-2, so that a few steps move the model visibly


def tinymix_logits(model, ids):
    with no_grad():
        return backend.to_numpy(model(backend.from_numpy(np.array([ids]))).data)[0]


def gpt2_logits(folder, ids):
    """GPT2LMHeadModel's forward pass from the files alone, in NumPy, as GPT-2 defines it."""
    config = json.loads((folder / "config.json").read_text())
    w = checkpoint.load_arrays(folder / "model.safetensors")
    H, C = config["n_head"], config["n_embd"]
    D, T, eps = C // H, len(ids), config["layer_norm_epsilon"]
    if config["activation_function"] == "gelu_new":
        act = lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    else:
        assert config["activation_function"] == "gelu"
        erf = np.vectorize(math.erf)
        act = lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))

    def norm(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

    def conv1d(x, name):                        # transformers' Conv1D: x W + b, W (in, out)
        return x @ w[name + ".weight"] + w[name + ".bias"]

    x = (w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][:T]).astype(np.float64)
    causal = np.triu(np.full((T, T), -np.inf), k=1)
    for i in range(config["n_layer"]):
        p = f"transformer.h.{i}."
        q, k, v = np.split(conv1d(norm(x, p + "ln_1"), p + "attn.c_attn"), 3, axis=-1)
        q, k, v = (m.reshape(T, H, D).transpose(1, 0, 2) for m in (q, k, v))
        s = q @ k.transpose(0, 2, 1) * D ** -0.5 + causal
        a = np.exp(s - s.max(-1, keepdims=True))
        a = (a / a.sum(-1, keepdims=True)) @ v
        x = x + conv1d(a.transpose(1, 0, 2).reshape(T, C), p + "attn.c_proj")
        x = x + conv1d(act(conv1d(norm(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    return norm(x, "transformer.ln_f") @ w["transformer.wte.weight"].T


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """(export folder, tinymix LanguageModel, tokenizer) of data/tiny_gpt."""
    out = tmp_path_factory.mktemp("shipped") / "hf"
    gpt_export.export_gpt(pretrained.TINY_GPT_DIR, out, **QUIET)
    model, tokenizer = pretrained.load_gpt()
    return out, LanguageModel(model).eval(), tokenizer


@pytest.fixture(scope="module")
def exact_gelu(tmp_path_factory):
    """A small random decoder with the erf GELU and eps 1e-6, saved as pretrain-gpt does, and exported."""
    root = tmp_path_factory.mktemp("exact")
    backend.manual_seed(3)
    _, tokenizer = pretrained.load_gpt()
    config = TransformerConfig(kind="decoder", vocab_size=tokenizer.vocab_size, hidden_size=48, num_layers=2,
                               num_heads=3, intermediate_size=80, max_positions=64, layer_norm_eps=1e-6,
                               gelu_approximate=False)
    model = Transformer(config)
    for p in model.parameters():                 # LayerNorms away from 1 and 0, so that each one matters
        p.data = p.data + backend.host_normal(p.shape, 0.1)
    pretrained.save_gpt(model, tokenizer, root / "gpt")
    gpt_export.export_gpt(root / "gpt", root / "hf", **QUIET)
    return root / "hf", LanguageModel(model).eval(), tokenizer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{method: (run folder, the run's deployed model)}: short real e2e runs, each exported to run/hf."""
    made, splits = {}, e2e.make_splits(16, 2, 2, seed=0)
    for method in FOLDING:
        root = tmp_path_factory.mktemp(method)
        cfg = finetune.NLGConfig(method=method, steps=6, batch_size=4, train_size=16, validation_size=2, test_size=2,
                                 eval_every=6, decoding="greedy", max_new_tokens=2, num_experts=2, progress=False,
                                 lr=RATES.get(method, 3e-2), out=str(root / "run"))
        result = finetune.train(cfg, splits)
        gpt_export.export_gpt(root / "run" / "merged", root / "run" / "hf", **QUIET)
        made[method] = root / "run", result["model"].eval()
    return made


# ---- without torch --------------------------------------------------------------------------------------

def test_the_folder_holds_a_gpt2_config_the_weights_and_the_tokenizer(shipped):
    out, model, _ = shipped
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                     "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((out / "config.json").read_text())
    ours = model.transformer.config
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["model_type"] == "gpt2"
    assert (config["n_embd"], config["n_layer"], config["n_head"], config["n_inner"], config["n_positions"],
            config["vocab_size"]) == (128, 4, 4, 512, 128, 2048) == (
        ours.hidden_size, ours.num_layers, ours.num_heads, ours.intermediate_size, ours.max_positions, ours.vocab_size)
    assert config["activation_function"] == "gelu_new" and ours.gelu_approximate       # the tanh form
    assert config["layer_norm_epsilon"] == ours.layer_norm_eps == 1e-5
    assert config["scale_attn_weights"] and not config["scale_attn_by_inverse_layer_idx"]
    assert not config["reorder_and_upcast_attn"] and not config["add_cross_attention"]
    assert config["tie_word_embeddings"] and (config["pad_token_id"], config["eos_token_id"]) == (0, 1)
    arrays = checkpoint.load_arrays(out / "model.safetensors")
    C = 128
    shapes = {"transformer.wte.weight": (2048, C), "transformer.wpe.weight": (128, C),
              "transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,)}
    for i in range(4):
        p = f"transformer.h.{i}."
        shapes.update({p + "ln_1.weight": (C,), p + "ln_1.bias": (C,), p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
                       p + "attn.c_attn.weight": (C, 3 * C), p + "attn.c_attn.bias": (3 * C,),
                       p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
                       p + "mlp.c_fc.weight": (C, 512), p + "mlp.c_fc.bias": (512,),
                       p + "mlp.c_proj.weight": (512, C), p + "mlp.c_proj.bias": (C,)})
    assert {k: a.shape for k, a in arrays.items()} == shapes                  # no lm_head: tied to wte
    assert all(a.dtype == np.float32 for a in arrays.values())
    layer = model.transformer.layers[1]
    np.testing.assert_array_equal(arrays["transformer.h.1.attn.c_attn.weight"][:, C:2 * C],
                                  backend.to_numpy(layer.attention.key.weight.data).T)    # Conv1D: (in, out)
    np.testing.assert_array_equal(arrays["transformer.h.1.mlp.c_proj.weight"], backend.to_numpy(layer.output.weight.data).T)
    assert (out / "tokenizer.json").read_bytes() == (pretrained.TINY_GPT_DIR / "tokenizer.json").read_bytes()
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (tokenizer_config["eos_token"], tokenizer_config["pad_token"], tokenizer_config["model_max_length"]) == (
        "<|endoftext|>", "<|pad|>", 128)
    readme = (out / "README.md").read_text()
    assert "GPT2LMHeadModel" in readme and "PreTrainedTokenizerFast" in readme and "gelu_new" in readme


def test_the_files_read_as_gpt2_reads_them_give_tinymix_logits(shipped, exact_gelu):
    for out, model, tokenizer in (shipped, exact_gelu):
        for prompt in PROMPTS:
            ids = tokenizer.encode(prompt)
            np.testing.assert_allclose(gpt2_logits(out, ids), tinymix_logits(model, ids), rtol=0, atol=2e-4)
    assert json.loads((exact_gelu[0] / "config.json").read_text())["activation_function"] == "gelu"


@pytest.mark.parametrize("method", FOLDING)
def test_a_fine_tuned_run_goes_out_folded_and_gives_the_run_s_logits(method, runs, shipped):
    run, model = runs[method]
    folder = run / "hf"
    saved = checkpoint.load_json(run / "merged" / "adapter_config.json")
    assert saved["transformer"]["kind"] == "decoder"
    exported, base = (checkpoint.load_arrays(f / "model.safetensors") for f in (folder, shipped[0]))
    assert sorted(exported) == sorted(base)
    changed = {k for k in base if not np.array_equal(exported[k], base[k])}
    query_value = {f"transformer.h.{i}.attn.c_attn.weight" for i in range(4)}
    if method in ("lora", "adamix-lora", "adalora"):                # query and value only: in c_attn
        assert changed == query_value
    elif method == "loretta-rep":                                   # and every LayerNorm, which it trains too
        assert changed == query_value | {k for k in base if ".ln_" in k}
    elif method in ("hadamard", "adamix-hadamard"):                     # W_O and b_O, and the LayerNorm under it
        assert changed == {f"transformer.h.{i}.{n}" for i in range(4)
                           for n in ("attn.c_proj.weight", "attn.c_proj.bias", "ln_1.weight", "ln_1.bias")}
    elif method == "ft-top2":
        assert changed and all(k.startswith(("transformer.h.2.", "transformer.h.3.", "transformer.ln_f.")) for k in changed)
    else:
        assert len(changed) == len(base)
    tokenizer = shipped[2]
    moved = max(float(np.abs(tinymix_logits(model, tokenizer.encode(p)) - tinymix_logits(shipped[1], tokenizer.encode(p))).max())
                for p in PROMPTS)
    worst = max(float(np.abs(gpt2_logits(folder, tokenizer.encode(p)) - tinymix_logits(model, tokenizer.encode(p))).max())
                for p in PROMPTS)
    assert moved > 50 * worst and worst < 2e-4, (moved, worst)
    readme = (folder / "README.md").read_text()
    assert "fine-tuned with tinymix method" in readme and gpt_export.FOLDED[model.peft_config.method] in readme


def fake_run(root, config, results=True):
    """A run folder whose merged/ holds only adapter_config.json, for the refusals that come first."""
    gpt = TransformerConfig(**{k: v for k, v in checkpoint.load_json(pretrained.TINY_GPT_DIR / "config.json").items()
                               if k != "training"})
    checkpoint.save_json(root / "merged" / "adapter_config.json", {
        "config": peft.config_to_dict(config), "merged": True, "transformer": vars(gpt), "shapes": {}})
    if results:
        checkpoint.save_json(root / "results.json", {"config": {"model": "tiny-gpt"}, "pretrained_weights":
                                                     files.sha256(pretrained.TINY_GPT_DIR / "model.safetensors")})
    return root / "merged"


@pytest.mark.parametrize("method, says", [
    ("adapter", "bottleneck adapters .* no place for it"),
    ("adamix", "bottleneck adapters"),
    ("prefix", "prefix-tuning: learned keys and values"),
])
def test_what_has_no_gpt2_form_is_refused(method, says, tmp_path):
    from tinymix import methods
    config = methods.peft_config(finetune.NLGConfig(method=method), 10)
    with pytest.raises(ValueError, match=says):
        gpt_export.export_gpt(fake_run(tmp_path, config), tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


def test_a_run_needs_its_base_unchanged(runs, tmp_path):
    with pytest.raises(ValueError, match="no results.json beside it"):
        gpt_export.export_gpt(fake_run(tmp_path / "a", peft.LoRAConfig(), results=False), tmp_path / "out", **QUIET)
    run, _ = runs["lora"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "merged").symlink_to(run / "merged")
    record = json.loads((run / "results.json").read_text())
    checkpoint.save_json(tmp_path / "b" / "results.json", {**record, "pretrained_weights": "0" * 64})
    with pytest.raises(ValueError, match="weights file has changed since"):
        gpt_export.export_gpt(tmp_path / "b" / "merged", tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_encoder_writing_over_a_model_and_the_source(shipped, tmp_path):
    out, _, _ = shipped
    with pytest.raises(ValueError, match="already holds a model"):
        gpt_export.export_gpt(pretrained.TINY_GPT_DIR, out, **QUIET)
    with pytest.raises(ValueError, match="the folder being converted"):
        gpt_export.export_gpt(pretrained.TINY_GPT_DIR, pretrained.TINY_GPT_DIR, **QUIET)
    encoder = Transformer(TransformerConfig(vocab_size=2048, hidden_size=32, num_layers=1, num_heads=4,
                                            intermediate_size=64))
    pretrained.save_gpt(encoder, pretrained.load_gpt()[1], tmp_path / "encoder")
    with pytest.raises(ValueError, match="not a decoder"):
        gpt_export.export_gpt(tmp_path / "encoder", tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


def test_the_command_writes_it_and_the_other_formats_point_to_it(shipped, runs, tmp_path, capsys):
    cli.main(["export", str(pretrained.TINY_GPT_DIR), "--format", "transformers", "--out", str(tmp_path / "gpt")])
    output = capsys.readouterr().out
    assert "as a transformers GPT2LMHeadModel folder" in output and "AutoModelForCausalLM" in output
    assert (tmp_path / "gpt" / "model.safetensors").read_bytes() == (shipped[0] / "model.safetensors").read_bytes()
    run, _ = runs["adamix-lora"]
    cli.main(["export", str(run / "merged"), "--format", "transformers", "--out", str(tmp_path / "run")])
    assert "fine-tuned with adamix-lora" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"^error: .*already holds a model"):
        cli.main(["export", str(pretrained.TINY_GPT_DIR), "--format", "transformers", "--out", str(tmp_path / "gpt")])
    with pytest.raises(SystemExit, match=r"^error: .*a tiny GPT checkpoint, not an adapter.*--format transformers"):
        cli.main(["export", str(pretrained.TINY_GPT_DIR), "--format", "peft", "--out", str(tmp_path / "p")])
    for format_name in ("peft", "adapterhub"):
        with pytest.raises(SystemExit, match=r"^error: .*trained on the tiny GPT.*--format transformers"):
            cli.main(["export", str(run / "merged"), "--format", format_name, "--out", str(tmp_path / "p")])


# ---- with torch and transformers ------------------------------------------------------------------------

def load_hf(folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model, info = transformers.AutoModelForCausalLM.from_pretrained(str(folder), output_loading_info=True)
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return torch, transformers, model.eval()


def compare(folder, ours, tokenizer, label, monkeypatch, new_tokens=8):
    """The largest |transformers - tinymix| next-token logit over PROMPTS against the logits' scale, and
    greedy generation of new_tokens tokens, token for token."""
    torch, _, theirs = load_hf(folder, monkeypatch)
    worst = scale = 0.0
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        with torch.no_grad():
            logits = theirs(torch.tensor([ids])).logits[0].numpy()
        mine = tinymix_logits(ours, ids)
        worst, scale = max(worst, float(np.abs(logits - mine).max())), max(scale, float(np.abs(mine).max()))
        generated = theirs.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                                    attention_mask=torch.ones(1, len(ids), dtype=torch.long))[0, len(ids):].tolist()
        found = decode.greedy(ours, [ids], end_id=1, max_new_tokens=new_tokens)[0]
        assert generated == found.ids + ([1] if found.finished else []), prompt
    print(f"{label}: largest |GPT2LMHeadModel - tinymix| logit {worst:.2e}, logits up to {scale:.1f}; "
          f"greedy tokens the same on {len(PROMPTS)} prompts")
    assert worst < 1e-4 * scale
    return worst, scale


def test_transformers_loads_the_tiny_gpt_and_gives_its_logits_and_tokens(shipped, monkeypatch):
    out, model, tokenizer = shipped
    compare(out, model, tokenizer, "tiny GPT (gelu_new)", monkeypatch, new_tokens=12)


def test_transformers_loads_a_decoder_with_the_exact_gelu(exact_gelu, monkeypatch):
    out, model, tokenizer = exact_gelu
    compare(out, model, tokenizer, "random decoder (gelu)", monkeypatch)


@pytest.mark.parametrize("method", FOLDING)
def test_transformers_loads_a_fine_tuned_run(method, runs, shipped, monkeypatch):
    run, model = runs[method]
    compare(run / "hf", model, shipped[2], f"e2e run, {method}", monkeypatch)


def test_autotokenizer_gives_tinymix_ids_and_text(shipped, monkeypatch):
    out, _, tokenizer = shipped
    _, transformers, _ = load_hf(out, monkeypatch)
    theirs = transformers.AutoTokenizer.from_pretrained(str(out))
    assert (theirs.pad_token_id, theirs.eos_token_id) == (0, 1)
    for text in TEXTS:
        ids = theirs(text)["input_ids"]
        assert ids == tokenizer.encode(text), text
        assert theirs.decode(ids, skip_special_tokens=True) == tokenizer.decode(ids), text
    batch = theirs(TEXTS, padding=True, return_tensors="np")
    ours_ids, ours_mask = tokenizer(TEXTS)
    np.testing.assert_array_equal(batch["input_ids"], ours_ids)
    np.testing.assert_array_equal(batch["attention_mask"], ours_mask)
    long = "The Eagle is a pub. " * 60
    assert theirs(long, truncation=True)["input_ids"] == tokenizer.encode(long)          # 128 tokens, cut alike
    assert len(tokenizer.encode(long)) == 128
