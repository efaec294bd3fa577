"""Export of full fine-tuning and BitFit as a whole transformers BertModel folder
(tinymix/export/transformers_export.py).

Without torch: the names are pretrained.py's renaming run backwards, for every MiniLM weight; the folder
holds MiniLM's config and tokenizer, every weight, the trained ones bit for bit (read back through
pretrained.bert_state_dict they give the tinymix model, which then computes the same logits), the rest
MiniLM's; what is no whole-model method is refused. With torch and transformers importable
(requirements-export.txt, never a requirement): AutoModel.from_pretrained loads the folder and gives
tinymix's sentence embeddings.
"""
import json

import numpy as np
import pytest

import tinymix
from tinymix import backend, cli, peft, pretrained
from tinymix.export import peft_export, transformers_export as tx
from tinymix.store import assets, checkpoint
from tinymix.tensor import no_grad
from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig

pytestmark = pytest.mark.numerics

QUIET = dict(say=lambda line: None)
TEXTS = ["A gripping, beautifully acted film.", "I want my two hours back.", "fine",
         "The plot wanders, but the last act is worth the wait."]


def minilm_arrays():
    return checkpoint.load_array_bytes(assets.read_member("minilm", pretrained._MINILM_DIR + "model.safetensors"))


def tuned(config, seed):
    """Real MiniLM with a classifier, its trainable weights moved as if fine-tuned: every weight a little
    (full), or the biases (BitFit)."""
    tinymix.manual_seed(seed)
    minilm, tokenizer = pretrained.load_pretrained("minilm-l6")
    model = peft.get_peft_model(SequenceClassifier(minilm, 2, dropout=0.0), config)
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = 0.05 if name.endswith(".bias") else 0.01
            p.data = p.data + backend.host_normal(p.shape, scale)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{method: (folder, model, tokenizer)}: full fine-tuning and BitFit saved as a run's merged/, exported."""
    made = {}
    for seed, config in enumerate((peft.FullFineTuneConfig(), peft.BitFitConfig())):
        root = tmp_path_factory.mktemp(config.method)
        model, tokenizer = tuned(config, seed)
        peft.save_adapter(peft.merge(model), root / "tinymix")
        tx.export_transformers(root / "tinymix", root / "bert", **QUIET)
        made[config.method] = root, model, tokenizer
    return made


def logits(model, tokenizer):
    ids, mask = tokenizer(TEXTS)
    with no_grad():
        return model(ids, mask).numpy()


def test_the_names_are_pretrained_renaming_backwards_for_every_minilm_weight():
    arrays = {k: v for k, v in minilm_arrays().items() if not k.startswith(("pooler.", "embeddings.position_ids"))}
    renamed = pretrained.bert_state_dict(arrays)
    assert len(renamed) == len(arrays) == 5 + 16 * 6          # embeddings (3 + LayerNorm 2), 16 per layer
    assert {tx.bert_name(ours) for ours in renamed} == set(arrays)
    assert all(tx.bert_name(ours) in arrays and arrays[tx.bert_name(ours)] is renamed[ours] for ours in renamed)
    with pytest.raises(KeyError, match="no BertModel name"):
        tx.bert_name("layers.0.ffn_adapter.down.weight")


@pytest.mark.parametrize("method", ["full", "bitfit"])
def test_the_folder_is_minilm_with_the_trained_weights_in_place(method, runs):
    root, model, tokenizer = runs[method]
    folder = root / "bert"
    assert sorted(p.name for p in folder.iterdir()) == sorted(["README.md", "config.json", "head.safetensors",
                                                               "model.safetensors", *tx.TOKENIZER_FILES])
    where = pretrained._MINILM_DIR
    assert (folder / "config.json").read_bytes() == assets.read_member("minilm", where + "config.json")
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["BertModel"]
    exported, minilm = checkpoint.load_arrays(folder / "model.safetensors"), minilm_arrays()
    assert sorted(exported) == sorted(k for k in minilm if k != "embeddings.position_ids")
    assert all(np.array_equal(exported[k], minilm[k]) for k in ("pooler.dense.weight", "pooler.dense.bias"))
    ours = {k: backend.to_numpy(v) for k, v in model.transformer.state_dict().items()}
    back = pretrained.bert_state_dict(exported)
    assert sorted(back) == sorted(ours) and all(np.array_equal(back[k], ours[k]) for k in ours)
    differ = {k for k in ours if not np.array_equal(ours[k], pretrained.bert_state_dict(minilm)[k])}
    assert differ == (set(ours) if method == "full" else {k for k in ours if k.endswith(".bias")})
    head = checkpoint.load_arrays(folder / "head.safetensors")
    assert np.array_equal(head["classifier.weight"], backend.to_numpy(model.classifier.weight.data))
    fresh = SequenceClassifier(Transformer(peft_export.minilm_config()), 2, dropout=0.0)
    fresh.transformer.load_state_dict(back)
    fresh.classifier.weight.data, fresh.classifier.bias.data = (backend.from_numpy(head[k]) for k in
                                                                ("classifier.weight", "classifier.bias"))
    assert np.array_equal(logits(fresh.eval(), tokenizer), logits(model, tokenizer))
    readme = (folder / "README.md").read_text()
    assert "AutoModel.from_pretrained" in readme and "the mean over non-pad tokens" in readme


def fake_adapter(folder, config, transformer):
    checkpoint.save_json(folder / "adapter_config.json", {"config": peft.config_to_dict(config), "merged": False,
                                                          "transformer": vars(transformer), "shapes": {}})
    return folder


@pytest.mark.parametrize("config, says", [
    (peft.AdapterConfig(), "--format adapterhub"),
    (peft.AdaMixConfig(), "--format adapterhub"),
    (peft.LoRAConfig(), "--format peft"),
    (peft.AdaMixConfig(module="lora"), "--format peft"),
])
def test_export_refuses_what_is_no_whole_model(config, says, tmp_path):
    folder = fake_adapter(tmp_path / "a", config, peft_export.minilm_config())
    with pytest.raises(ValueError, match=says):
        tx.export_transformers(folder, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


def test_export_refuses_another_base_model_and_writing_over_a_model(runs, tmp_path):
    tiny = TransformerConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    with pytest.raises(ValueError, match="another base model than all-MiniLM-L6-v2"):
        tx.export_transformers(fake_adapter(tmp_path / "a", peft.BitFitConfig(), tiny), tmp_path / "out", **QUIET)
    root, _, _ = runs["bitfit"]
    with pytest.raises(ValueError, match="already holds a model"):
        tx.export_transformers(root / "tinymix", root / "bert", **QUIET)
    with pytest.raises(ValueError, match="the folder being converted"):
        tx.export_transformers(root / "tinymix", root / "tinymix", **QUIET)
    assert not (tmp_path / "out").exists()


def test_the_command_writes_it_and_a_user_error_is_one_line(runs, tmp_path, capsys):
    root, _, _ = runs["bitfit"]
    cli.main(["export", str(root / "tinymix"), "--format", "transformers", "--out", str(tmp_path / "bert")])
    output = capsys.readouterr().out
    assert "wrote MiniLM after BitFit as a transformers BertModel folder" in output and "AutoModel" in output
    assert (tmp_path / "bert" / "model.safetensors").read_bytes() == (root / "bert" / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit, match=r"^error: .*already holds a model"):
        cli.main(["export", str(root / "tinymix"), "--format", "transformers", "--out", str(tmp_path / "bert")])


@pytest.mark.parametrize("method", ["full", "bitfit"])
def test_automodel_loads_the_folder_and_gives_tinymix_embeddings(method, runs, monkeypatch):
    """AutoModel.from_pretrained on the folder (offline), against the tinymix model: the same mean-pooled
    embeddings, far closer than fine-tuning moved them from MiniLM's."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    root, model, tokenizer = runs[method]
    bert = transformers.AutoModel.from_pretrained(str(root / "bert")).eval()
    assert type(bert).__name__ == "BertModel"
    ids, mask = tokenizer(TEXTS)
    with torch.no_grad():
        hidden = bert(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    m = torch.from_numpy(mask).float()[:, :, None]
    theirs = ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).numpy()
    ours = backend.to_numpy(pretrained.embed(model.transformer, tokenizer, TEXTS))
    minilm, _ = pretrained.load_pretrained("minilm-l6")
    plain = backend.to_numpy(pretrained.embed(minilm, tokenizer, TEXTS))
    theirs_ids = transformers.AutoTokenizer.from_pretrained(str(root / "bert"))(TEXTS, padding=True)["input_ids"]
    assert np.array_equal(np.array(theirs_ids), ids)                  # the tokenizer files travel with it
    moved, worst = float(np.abs(ours - plain).max()), float(np.abs(theirs - ours).max())
    print(f"transformers export, {method}: largest |AutoModel - tinymix| {worst:.2e}; fine-tuning moved the "
          f"embeddings by up to {moved:.2e}")
    assert moved > 1e-1
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)


def test_minilm_itself_goes_out_as_its_own_files(tmp_path, capsys):
    """export minilm-l6: MiniLM's files from its pinned wheel, unchanged (the base PEFT and AdapterHub
    folders load onto, offline); never over a model, and only as --format transformers."""
    cli.main(["export", "minilm-l6", "--format", "transformers", "--out", str(tmp_path / "minilm")])
    assert "the base model for the PEFT and AdapterHub exports" in capsys.readouterr().out
    where = pretrained._MINILM_DIR
    for name in ("model.safetensors", "config.json", *tx.TOKENIZER_FILES):
        assert (tmp_path / "minilm" / name).read_bytes() == assets.read_member("minilm", where + name), name
    assert "BertModel.from_pretrained" in (tmp_path / "minilm" / "README.md").read_text()
    with pytest.raises(SystemExit, match=r"^error: .*already holds a model"):
        cli.main(["export", "minilm-l6", "--format", "transformers", "--out", str(tmp_path / "minilm")])
    with pytest.raises(SystemExit, match=r"^error: minilm-l6 is the base model, not an adapter"):
        cli.main(["export", "minilm-l6", "--out", str(tmp_path / "peft")])
    assert not (tmp_path / "peft").exists()
