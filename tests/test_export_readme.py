"""README.md's "Take it elsewhere": its table, its export commands and its PyTorch snippets, as written.

Each snippet is the ```python block after a `<!-- snippet: NAME -->` line. Without torch: every method
tinymix trains is in the table or among what cannot leave, never both, and what the README says cannot
leave is refused by every format; every folder a snippet loads is the --out of one of the commands. With
torch (and peft, adapters where a snippet imports them): the README's commands run through cli.main,
with short runs' folders in place of runs/.../merged and a temporary folder for each --out; then each
snippet runs with only those folder names replaced by the paths, offline, and gives what tinymix computes.
"""
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import tinymix
from tinymix import backend, cli, decode, e2e, methods, peft, pretrained
from tinymix.e2e import finetune
from tinymix.export import adapterhub_export, gpt_export, peft_export, transformers_export
from tinymix.store import checkpoint
from tinymix.train import TrainConfig
from tinymix.transformer import LanguageModel, SequenceClassifier, TransformerConfig

pytestmark = pytest.mark.numerics

README = Path(__file__).resolve().parent.parent / "README.md"
EXPORTS = {"peft": peft_export.export_peft, "adapterhub": adapterhub_export.export_adapterhub,
           "transformers": transformers_export.export_transformers}


def section():
    text = README.read_text()
    start = text.index("## Take it elsewhere\n")
    return text[start:text.index("\n## ", start + 1)]


def snippets():
    """{name: code} of the section's snippets."""
    found = dict(re.findall(r"<!-- snippet: ([\w-]+) -->\n```python\n(.*?)```", section(), re.S))
    assert sorted(found) == ["adapterhub", "peft", "transformers-bert", "transformers-gpt"]
    return found


def commands():
    """[(source, format, out)] of the section's `python3 -m tinymix export` lines."""
    lines = [line.split("#")[0].strip() for line in section().splitlines() if line.startswith("    python3 -m tinymix export ")]
    made = []
    for line in lines:
        words = shlex.split(line)[4:]                         # after python3 -m tinymix export
        assert words[1::2][:2] == ["--format", "--out"] and len(words) == 5, line
        made.append((words[0], words[2], words[4]))
    return made


def names(text):
    return set(re.findall(r"`([a-z0-9-]+)`", text))


def parts():
    """(the table's MiniLM methods, its e2e methods, what cannot leave the tiny GPT, and MiniLM)."""
    text = section()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    minilm = set().union(*(names(row.split("|")[1]) for row in rows if row.split("|")[2].strip() == "MiniLM"))
    e2e_row = [row for row in rows if row.startswith("| `--task e2e`")]
    bullets = text[text.index("What cannot leave"):text.index("Loading each")]
    gpt_bullet = bullets[bullets.index("- On the tiny GPT"):bullets.index("- On MiniLM")]
    minilm_bullet = bullets[bullets.index("- On MiniLM"):]
    return minilm, names(e2e_row[0].split("|")[1]), names(gpt_bullet), names(minilm_bullet)


def saved(folder, config, transformer_config):
    checkpoint.save_json(folder / "adapter_config.json", {"config": peft.config_to_dict(config), "merged": True,
                                                          "transformer": vars(transformer_config), "shapes": {}})
    return folder


# ---- without torch ------------------------------------------------------------------------------------------

def test_every_method_is_in_the_table_or_among_what_cannot_leave():
    minilm, gpt, gpt_refused, minilm_refused = parts()
    assert minilm | minilm_refused == set(methods.names(methods.CLASSIFICATION)) and not minilm & minilm_refused
    assert gpt | gpt_refused == set(methods.names(methods.E2E)) and not gpt & gpt_refused
    assert {methods.peft_config(finetune.NLGConfig(method=m), 10).method for m in gpt} <= set(gpt_export.FOLDED)


def test_what_the_readme_says_cannot_leave_is_refused(tmp_path):
    _, _, gpt_refused, minilm_refused = parts()
    for method in sorted(minilm_refused):
        folder = saved(tmp_path / method / "a", methods.peft_config(TrainConfig(method=method), 10),
                       peft_export.minilm_config())
        for format_name, export in EXPORTS.items():
            with pytest.raises(ValueError, match="holds"):
                export(folder, tmp_path / method / format_name, say=lambda line: None)
    gpt = json.loads((pretrained.TINY_GPT_DIR / "config.json").read_text())
    gpt.pop("training")
    for method in sorted(gpt_refused):
        config = methods.peft_config(finetune.NLGConfig(method=method), 10)
        folder = saved(tmp_path / method / "merged", config, TransformerConfig(**gpt))
        with pytest.raises(ValueError, match="no place for|cannot hold|no GPT-2 folder"):
            gpt_export.export_gpt(folder, tmp_path / method / "hf", say=lambda line: None)


def test_every_folder_a_snippet_loads_is_written_by_a_command():
    outs = {out for _, _, out in commands()}
    assert len(outs) == len(commands())
    for name, code in snippets().items():
        loaded = set(re.findall(r'(?:from_pretrained|load_adapter)\((?:base, )?"([^"]+)"', code))
        assert loaded and loaded <= outs, (name, loaded)


# ---- with torch ----------------------------------------------------------------------------------------------

def moved(model, seed):
    """A MiniLM run's trainable weights drawn away from where they started, as if trained."""
    tinymix.manual_seed(seed)
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data = p.data + backend.host_normal(p.shape, 0.01 if "classifier" not in name and model.peft_config.method
                                                  == "full" else 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{out name: folder}, and the tinymix models they came from, made by the README's own commands."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("readme")
    models, sources = {}, {"minilm-l6": "minilm-l6", "data/tiny_gpt": str(pretrained.TINY_GPT_DIR)}
    for seed, (source, config) in enumerate((("runs/lora/merged", peft.LoRAConfig()),
                                             ("runs/adapter/merged", peft.AdapterConfig()),
                                             ("runs/full/merged", peft.FullFineTuneConfig()))):
        minilm, tokenizer = pretrained.load_pretrained("minilm-l6")
        tinymix.manual_seed(seed)
        model = moved(peft.get_peft_model(SequenceClassifier(minilm, 2, dropout=0.0), config), seed)
        peft.save_adapter(peft.merge(model), root / source)
        models[source], sources[source] = model, str(root / source)
    run = root / "runs" / "e2e-lora"
    finetune.train(finetune.NLGConfig(method="lora", steps=2, batch_size=4, train_size=8, validation_size=2,
                                      test_size=2, eval_every=2, decoding="greedy", max_new_tokens=2,
                                      progress=False, out=str(run)), e2e.make_splits(8, 2, 2, seed=0))
    sources["runs/e2e-lora/merged"] = str(run / "merged")
    folders = {}
    for source, format_name, out in commands():
        folders[out] = root / "out" / out
        cli.main(["export", sources[source], "--format", format_name, "--out", str(folders[out])])
    return folders, models, tokenizer


def run_snippet(name, folders, monkeypatch):
    """The snippet, its folder names replaced by the exported folders' paths, run offline: its variables."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = snippets()[name]
    for out, folder in folders.items():
        code = code.replace(json.dumps(out), json.dumps(str(folder)))
    variables = {}
    exec(compile(code, f"README.md snippet {name}", "exec"), variables)
    return variables


@pytest.mark.parametrize("name, source, needs", [("peft", "runs/lora/merged", "peft"),
                                                 ("adapterhub", "runs/adapter/merged", "adapters"),
                                                 ("transformers-bert", "runs/full/merged", None)])
def test_a_minilm_snippet_gives_tinymix_sentence_vectors(name, source, needs, exported, monkeypatch):
    if needs:
        pytest.importorskip(needs)
    folders, models, tokenizer = exported
    variables = run_snippet(name, folders, monkeypatch)
    ours = backend.to_numpy(pretrained.embed(models[source].transformer, tokenizer, variables["sentences"]))
    minilm, _ = pretrained.load_pretrained("minilm-l6")
    plain = backend.to_numpy(pretrained.embed(minilm, tokenizer, variables["sentences"]))
    theirs = variables["vector"].numpy()
    worst, shift = float(np.abs(theirs - ours).max()), float(np.abs(ours - plain).max())
    print(f"README snippet {name}: largest |theirs - tinymix| {worst:.2e}; the run moved MiniLM's by {shift:.2e}")
    assert shift > 1e-2
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)


def test_the_gpt_snippet_writes_what_tinymix_writes(exported, monkeypatch):
    folders, _, _ = exported
    variables = run_snippet("transformers-gpt", folders, monkeypatch)
    gpt, tokenizer = pretrained.load_gpt()
    ids = variables["ids"][0].tolist()
    assert ids == tokenizer.encode("name The Eagle, type pub, food Italian =>")
    found = decode.greedy(LanguageModel(gpt), [ids], end_id=1, max_new_tokens=30)[0]
    assert variables["out"][0, len(ids):].tolist() == found.ids + ([1] if found.finished else [])
    assert variables["text"] == tokenizer.decode(found.ids) and len(found.ids) > 3
    assert (folders["my-gpt-lora"] / "model.safetensors").is_file()
