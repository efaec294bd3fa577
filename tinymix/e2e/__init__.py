"""An E2E-style data-to-text task, generated here, and its two scores: corpus BLEU-4 and slot errors.

    e2e (this file)   the task: MRs as prompts, held-out splits, BLEU, slot errors
    templates.py      the MRs' slots and values and the sentence templates
    pretrain.py       pretraining the tiny GPT on Shakespeare and plain restaurant texts
    gpt_folder.py     the tiny GPT's checkpoint folder, written as one set
    finetune.py       adapting the frozen tiny GPT to the task, decoding and scoring

The MRs and the sentence templates live in templates.py (their names are re-exported here). Every
MR has a name and 2 to 5 other slots (E2E has 3 to 8 in all: the prompt and the sentence share the
tiny GPT's 128-token window, and 8 slots with their sentence do not always fit). The model reads an
MR as a prompt, `format_mr`: "name The Eagle, type pub, food Italian =>".

The splits hold out what memorising would need (`make_splits`):
- slot-value COMBINATIONS: the tuple (eatType, food, priceRange, area) of an MR, absent slots
  included, belongs to exactly one split; a test MR's combination never occurs in training (each
  single value does);
- whole template FAMILIES: training and validation sentences use TRAIN_FAMILIES only; each test MR has
  one reference from every family, so its references include HELD_OUT_FAMILIES never seen in training.
  `finetune` reports BLEU against all references and against the held-out families' alone.
`domain_sentences` writes plain descriptions (no prompt) from the training combinations in the
training families: the restaurant text the tiny GPT is pretrained on besides Shakespeare (pretrain.py).
Everything is deterministic given the seed.

Scores:
- `corpus_bleu`: BLEU-4 (Papineni et al. 2002) over the corpus, clipped n-gram counts against all
  references of a sentence, uniform weights, brevity penalty with the closest reference length, no
  smoothing. Text is lower-cased and split into words and punctuation marks.
- `slot_errors`: for each slot of the MR, is its value said in the output (missing otherwise), and is
  another value of that slot said (wrong)? Values are found by the phrases the templates use, longest
  first, so "not family-friendly" is never read as "family-friendly". Slot error rate =
  (missing + wrong) / slots in the MRs. Values of slots absent from the MR are counted as "added",
  reported but not in the rate.
"""
import math
import re
from collections import Counter
from dataclasses import dataclass, field

from .. import backend
from .templates import (FAMILIES, HELD_OUT_FAMILIES, LANDMARKS, NAMES, OPEN_SLOTS, SLOTS,  # noqa: F401
                        TRAIN_FAMILIES, VALUES, realise, validate_mr)

COMBINATION_SLOTS = ("eatType", "food", "priceRange", "area")
PROMPT_KEYS = {"name": "name", "eatType": "type", "food": "food", "priceRange": "price",
               "customer rating": "rating", "area": "area", "familyFriendly": "family", "near": "near"}
PROMPT_END = " =>"


# ---- meaning representations and the prompt --------------------------------------------------------

def format_mr(mr):
    """The prompt the model reads: 'name The Eagle, type pub, food Italian, area riverside =>'.
    Short keys, plain words and no brackets: the prompt and the sentence share the tiny GPT's
    128-token window, and its tokenizer knows words ('price') better than E2E's keys ('priceRange')."""
    mr = validate_mr(mr)
    return ", ".join(f"{PROMPT_KEYS[slot]} {value}" for slot, value in mr.items()) + PROMPT_END


# ---- the data set ----------------------------------------------------------------------------------

@dataclass
class Example:
    mr: dict
    references: list = field(default_factory=list)   # sentences
    families: list = field(default_factory=list)     # the template family of each reference

    @property
    def prompt(self):
        return format_mr(self.mr)


def combination(mr):
    """The held-out unit: (eatType, food, priceRange, area), None for an absent slot."""
    return tuple(mr.get(slot) for slot in COMBINATION_SLOTS)


def combination_splits(seed=0, shares=(0.7, 0.15, 0.15)):
    """{combination: "train" | "validation" | "test"}: every possible combination in exactly one
    split, shuffled by `seed`."""
    options = [VALUES[slot] + (None,) for slot in COMBINATION_SLOTS]
    combos = [()]
    for values in options:
        combos = [c + (v,) for c in combos for v in values]
    order = backend.host_generator([seed, 1]).permutation(len(combos)).tolist()
    n_train, n_val = int(shares[0] * len(combos)), int(shares[1] * len(combos))
    names = ["train"] * n_train + ["validation"] * n_val + ["test"] * (len(combos) - n_train - n_val)
    return {combos[i]: split for i, split in zip(order, names)}


def sample_mr(rng, min_slots=2, max_slots=5):
    """A name plus min_slots..max_slots other slots with random values."""
    others = list(SLOTS[1:])
    count = int(rng.integers(min_slots, max_slots + 1))
    chosen = {others[i] for i in rng.choice(len(others), size=count, replace=False).tolist()}
    mr = {"name": NAMES[int(rng.integers(len(NAMES)))]}
    for slot in SLOTS[1:]:
        if slot in chosen:
            pool = LANDMARKS if slot == "near" else VALUES[slot]
            mr[slot] = pool[int(rng.integers(len(pool)))]
    return mr


def make_splits(train_size=2000, validation_size=100, test_size=200, seed=0, validation_references=3):
    """{"train", "validation", "test": [Example]}, deterministic in `seed`.
    train: one reference per MR from a random training family; validation: `validation_references`
    from distinct training families; test: one from every family (training and held-out)."""
    owner = combination_splits(seed)
    rng = backend.host_generator([seed, 2])
    sizes = {"train": train_size, "validation": validation_size, "test": test_size}
    splits, seen = {name: [] for name in sizes}, set()
    while any(len(splits[name]) < size for name, size in sizes.items()):
        mr = sample_mr(rng)
        split = owner[combination(mr)]
        key = tuple(mr.items())
        if len(splits[split]) >= sizes[split] or key in seen:
            continue
        seen.add(key)
        train_names = list(TRAIN_FAMILIES)
        if split == "train":
            families = [train_names[int(rng.integers(len(train_names)))]]
        elif split == "validation":
            families = [train_names[i] for i in rng.permutation(len(train_names))[:validation_references]]
        else:
            families = list(FAMILIES)
        splits[split].append(Example(mr, [realise(mr, f, rng) for f in families], families))
    return splits


def domain_sentences(count, split="train", families=tuple(TRAIN_FAMILIES), seed=0, data_seed=0, descriptions=1):
    """`count` Examples for pretraining a language model on the domain: random MRs whose combination
    belongs to `split` of combination_splits(data_seed), each with `descriptions` references written
    in distinct random families of `families`. The pretraining corpus uses split "train" and the
    training families only, so the test's combinations and the held-out families stay unseen; it is
    plain text (no MR prompt), so fine-tuning still has to learn to write FROM the MR. Deterministic
    in both seeds."""
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be 'train', 'validation' or 'test', got {split!r}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"unknown or no template families {unknown}: choose from {', '.join(FAMILIES)}")
    if count < 0:
        raise ValueError(f"count must be at least 0, got {count}")
    if not 1 <= descriptions <= len(families):
        raise ValueError(f"descriptions must be between 1 and the {len(families)} families, got {descriptions}")
    owner = combination_splits(data_seed)
    rng = backend.host_generator([data_seed, 3, seed, ("train", "validation", "test").index(split)])
    examples = []
    while len(examples) < count:
        mr = sample_mr(rng)
        if owner[combination(mr)] == split:
            chosen = [families[i] for i in rng.permutation(len(families))[:descriptions].tolist()]
            examples.append(Example(mr, [realise(mr, family, rng) for family in chosen], chosen))
    return examples


# ---- BLEU ------------------------------------------------------------------------------------------

def bleu_tokens(text):
    """Lower-cased words and punctuation marks: 'The Eagle, a pub.' -> the eagle , a pub ."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def _ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses, references, max_n=4):
    """Corpus BLEU: exp(mean_n log p_n) * BP, with p_n = sum of clipped n-gram matches / sum of
    hypothesis n-grams over the whole corpus (clipped: an n-gram counts at most as often as it occurs
    in any ONE reference), BP = exp(1 - r / c) if c < r else 1, c the hypotheses' total length and r
    the sum of each sentence's closest reference length (a tie goes to the shorter). Returns a dict
    with bleu in [0, 1], the precisions, bp, c and r."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise ValueError("BLEU of an empty corpus")
    matches, totals = [0] * max_n, [0] * max_n
    hyp_length = ref_length = 0
    for hypothesis, refs in zip(hypotheses, references):
        if isinstance(refs, str) or not refs:
            raise ValueError("each hypothesis needs a non-empty LIST of references")
        hyp = bleu_tokens(hypothesis)
        ref_tokens = [bleu_tokens(r) for r in refs]
        hyp_length += len(hyp)
        ref_length += min((abs(len(r) - len(hyp)), len(r)) for r in ref_tokens)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            most = Counter()
            for r in ref_tokens:
                most |= _ngrams(r, n)          # | keeps the larger count: the max over references
            matches[n - 1] += sum(min(c, most[gram]) for gram, c in counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    precisions = [m / t if t else 0.0 for m, t in zip(matches, totals)]
    if min(precisions) == 0.0:
        bleu, bp = 0.0, (1.0 if hyp_length >= ref_length else math.exp(1 - ref_length / max(hyp_length, 1)))
    else:
        bp = 1.0 if hyp_length > ref_length else math.exp(1 - ref_length / hyp_length)
        bleu = bp * math.exp(sum(math.log(p) for p in precisions) / max_n)
    return {"bleu": bleu, "precisions": precisions, "bp": bp, "hyp_length": hyp_length, "ref_length": ref_length}


# ---- slot errors -----------------------------------------------------------------------------------

# The phrases that say each value (what slot_errors looks for): the words templates.LEXICON and
# the families use. A test checks that every generated reference is read back as exactly its MR.
PATTERNS = {
    "eatType": {value: [value] for value in VALUES["eatType"]},
    "food": {value: [value.lower()] for value in VALUES["food"]},
    "priceRange": {"cheap": ["cheap", "low-priced", "low prices", "low price range"],
                   "moderate": ["moderately priced", "mid-priced", "moderate prices", "moderate price range"],
                   "high": ["expensive", "high-priced", "high prices", "high price range"]},
    "customer rating": {"low": ["low customer rating", "poorly rated"],
                        "average": ["average customer rating", "rated average"],
                        "high": ["high customer rating", "highly rated"],
                        **{v: [v] for v in VALUES["customer rating"] if "out of" in v}},
    "area": {"riverside": ["riverside"], "city centre": ["city centre", "centre of the city"]},
    "familyFriendly": {"yes": ["family-friendly", "child-friendly", "welcomes children", "children are welcome"],
                       "no": ["not family-friendly", "not child-friendly", "adults-only",
                              "does not welcome children", "children are not welcome"]},
}


def find_values(text, extra_names=()):
    """{slot: set of values said in the text}, reading the longest phrases first and blanking each
    match, so 'not family-friendly' is 'no' and not also 'yes'."""
    phrases = [(p, slot, value) for slot, values in PATTERNS.items() for value, ps in values.items() for p in ps]
    names = set(NAMES) | {v for slot, v in extra_names if slot == "name"}
    landmarks = set(LANDMARKS) | {v for slot, v in extra_names if slot == "near"}
    phrases += [(n.lower(), "name", n) for n in names] + [(n.lower(), "near", n) for n in landmarks]
    found, lowered = {}, text.lower()
    for phrase, slot, value in sorted(phrases, key=lambda item: -len(item[0])):
        pattern = r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])"
        if re.search(pattern, lowered):
            found.setdefault(slot, set()).add(value)
            lowered = re.sub(pattern, " ", lowered)
    return found


def slot_errors(mr, text):
    """{"slots": n, "missing": [slots], "wrong": [slots], "added": [slots]} for one output."""
    mr = validate_mr(mr)
    said = find_values(text, extra_names=[(s, v) for s, v in mr.items() if s in OPEN_SLOTS])
    missing = [slot for slot, value in mr.items() if value not in said.get(slot, ())]
    wrong = [slot for slot, value in mr.items() if said.get(slot, set()) - {value}]
    missing = [slot for slot in missing if slot not in wrong]     # a contradicted slot counts once
    added = [slot for slot in said if slot not in mr]
    return {"slots": len(mr), "missing": missing, "wrong": wrong, "added": added}


def slot_error_rate(mrs, texts):
    """(missing + wrong) / slots over a corpus, with the counts."""
    if len(mrs) != len(texts):
        raise ValueError(f"{len(mrs)} MRs but {len(texts)} texts")
    totals = Counter()
    for mr, text in zip(mrs, texts):
        errors = slot_errors(mr, text)
        totals["slots"] += errors["slots"]
        for kind in ("missing", "wrong", "added"):
            totals[kind] += len(errors[kind])
    rate = (totals["missing"] + totals["wrong"]) / max(totals["slots"], 1)
    return {"rate": rate, **totals}
