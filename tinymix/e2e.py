"""An E2E-style data-to-text task, generated here, and its two scores: corpus BLEU-4 and slot errors.

No package ships the E2E NLG data (assets.md section 4), so tinymix writes restaurant descriptions from
meaning representations (MRs) itself:

    {"name": "The Eagle", "eatType": "pub", "food": "Italian", "area": "riverside"}
    -> "The Eagle is an Italian pub in the riverside area."
    -> "There is an Italian pub called The Eagle by the riverside."        (another template family)

The eight slots are E2E's: name, eatType, food, priceRange, customer rating, area, familyFriendly,
near. Every MR has a name and 2 to 5 other slots (E2E has 3 to 8 in all: with the tiny GPT's
128-token window and its Shakespeare tokenizer, 8 slots and their sentence do not always fit).

Sentences come from TEMPLATE FAMILIES (sentence plans such as "X is a ...", "There is a ... called X",
"If you want a ..., try X"); inside a family the wording varies (synonyms, the order of clauses).
Grammar is done by rule, not by hand-written strings: `with_article` picks "a" or "an" by the sound of
the next word ("an Italian pub", "a cheap Italian pub", "an expensive pub"), `join_list` writes lists
("X, Y and Z"), and every clause agrees with its singular subject ("It serves ... and has ...").

The splits hold out what memorising would need (`make_splits`):
- slot-value COMBINATIONS: the tuple (eatType, food, priceRange, area) of an MR, absent slots
  included, belongs to exactly one split; a test MR's combination never occurs in training (each
  single value does);
- whole template FAMILIES: training and validation sentences use TRAIN_FAMILIES only; each test MR has
  one reference from every family, so its references include HELD_OUT_FAMILIES never seen in training.
  `nlg` reports BLEU against all references and against the held-out families' alone.
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

from . import backend

SLOTS = ("name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near")
VALUES = {
    "eatType": ("restaurant", "coffee shop", "pub"),
    "food": ("Italian", "English", "Indian", "Chinese", "French", "Japanese", "fast food"),
    "priceRange": ("cheap", "moderate", "high"),
    "customer rating": ("low", "average", "high", "1 out of 5", "3 out of 5", "5 out of 5"),
    "area": ("riverside", "city centre"),
    "familyFriendly": ("yes", "no"),
}
NAMES = ("The Eagle", "The Mill", "Aromi", "Zizzi", "Loch Fyne", "The Punter", "Cotto", "Giraffe",
         "The Wrestlers", "Strada", "The Phoenix", "Browns Cambridge", "Clowns", "The Vaults",
         "Midsummer House", "The Olive Grove", "Alimentum", "Wildwood", "Fitzbillies", "The Cricketers")
LANDMARKS = ("Burger King", "The Bakers", "Avalon", "Clare Hall", "The Sorrento", "Ranch",
             "The Six Bells", "Crowne Plaza Hotel", "Yippee Noodle Bar", "The Portland Arms")
OPEN_SLOTS = ("name", "near")     # free text: any value is allowed (and copied from the prompt)
COMBINATION_SLOTS = ("eatType", "food", "priceRange", "area")
PROMPT_KEYS = {"name": "name", "eatType": "type", "food": "food", "priceRange": "price",
               "customer rating": "rating", "area": "area", "familyFriendly": "family", "near": "near"}
PROMPT_END = " =>"


# ---- meaning representations and the prompt --------------------------------------------------------

def validate_mr(mr):
    """The MR (a dict slot -> value) in the canonical slot order, or a ValueError that says what is
    wrong: an empty MR, an unknown slot, a value a closed slot does not have, an empty value."""
    if not mr:
        raise ValueError("empty meaning representation: give at least one slot, e.g. {'name': 'The Eagle'}")
    unknown = [slot for slot in mr if slot not in SLOTS]
    if unknown:
        raise ValueError(f"unknown slot(s) {unknown}: the slots are {', '.join(SLOTS)}")
    for slot, value in mr.items():
        if not isinstance(value, str) or not value.strip() or any(c in value for c in ",\n") or "=>" in value:
            raise ValueError(f"slot {slot!r} has the value {value!r}: a value is non-empty text without "
                             "commas, '=>' or newlines")
        if slot not in OPEN_SLOTS and value not in VALUES[slot]:
            raise ValueError(f"slot {slot!r} has no value {value!r}: choose one of {', '.join(VALUES[slot])}")
    return {slot: mr[slot] for slot in SLOTS if slot in mr}


def format_mr(mr):
    """The prompt the model reads: 'name The Eagle, type pub, food Italian, area riverside =>'.
    Short keys and no brackets: the tiny GPT's tokenizer was learnt on Shakespeare (it spends 5 tokens
    on 'priceRange' and 7 on 'coffee shop'), and the prompt and the sentence share a 128-token window."""
    mr = validate_mr(mr)
    return ", ".join(f"{PROMPT_KEYS[slot]} {value}" for slot, value in mr.items()) + PROMPT_END


def parse_mr(prompt):
    """The inverse of format_mr: 'name The Eagle, food Italian =>' -> {"name": ..., "food": ...}."""
    keys = {short: slot for slot, short in PROMPT_KEYS.items()}
    body = prompt.strip().removesuffix(PROMPT_END.strip()).strip()
    if not body:
        raise ValueError("empty meaning representation: write e.g. 'name The Eagle, food Italian =>'")
    mr = {}
    for part in body.split(","):
        key, _, value = part.strip().partition(" ")
        if key not in keys:
            raise ValueError(f"unknown slot {key!r} in {part.strip()!r}: the slots are {', '.join(keys)}")
        mr[keys[key]] = value.strip()
    return validate_mr(mr)


# ---- grammar ---------------------------------------------------------------------------------------

_CONSONANT_SOUND = ("one", "uni", "use", "eu")     # a vowel letter said like a consonant: "a unique"
_SILENT_H = ("hour", "honest", "honour", "heir")   # an h not said: "an hour"


def with_article(phrase):
    """'an' before a vowel SOUND, 'a' before a consonant sound: an Italian pub, a cheap pub,
    an expensive pub, a one-star pub, an hour."""
    word = phrase.split()[0].lower()
    vowel_sound = (word[0] in "aeiou" and not word.startswith(_CONSONANT_SOUND)) or word.startswith(_SILENT_H)
    return ("an " if vowel_sound else "a ") + phrase


def join_list(items):
    """'A', 'A and B', 'A, B and C' (no comma before 'and')."""
    items = list(items)
    if not items:
        raise ValueError("join_list needs at least one item")
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def food_noun(food):
    return food if food == "fast food" else f"{food} food"     # never "fast food food"


# ---- the lexicon: how each value is said ---------------------------------------------------------
# adjective: before the noun ("a cheap pub"); clause: a verb phrase for a singular subject ("It is
# cheap"); place: a prepositional phrase ("in the city centre"); lead: opens a sentence.

_RATING_WORD = {"low": ("low", "poorly rated"), "average": ("average", "rated average by customers"),
                "high": ("high", "highly rated")}


def _rating(value):
    if value in _RATING_WORD:
        word, rated = _RATING_WORD[value]
        with_phrase = with_article(f"{word} customer rating")
        lead = rated[0].upper() + rated[1:] + ("" if "customers" in rated else " by customers")
        return {"with": [with_phrase], "clause": [f"has {with_phrase}", f"is {rated}"], "lead": [lead]}
    with_phrase = f"a customer rating of {value}"
    return {"with": [with_phrase], "clause": [f"has {with_phrase}", f"is rated {value} by customers"],
            "lead": [f"Rated {value} by customers"]}


LEXICON = {
    "priceRange": {
        "cheap": {"adjective": ["cheap", "low-priced"], "with": ["low prices"],
                  "clause": ["has low prices", "is cheap", "is in the low price range"]},
        "moderate": {"adjective": ["moderately priced", "mid-priced"], "with": ["moderate prices"],
                     "clause": ["has moderate prices", "is moderately priced", "is in the moderate price range"]},
        "high": {"adjective": ["expensive", "high-priced"], "with": ["high prices"],
                 "clause": ["has high prices", "is expensive", "is in the high price range"]},
    },
    "customer rating": {value: _rating(value) for value in VALUES["customer rating"]},
    "area": {
        "riverside": {"place": ["in the riverside area", "by the riverside", "on the riverside"]},
        "city centre": {"place": ["in the city centre", "in the centre of the city"]},
    },
    "familyFriendly": {
        "yes": {"adjective": ["family-friendly", "child-friendly"], "sentence": ["Children are welcome."],
                "clause": ["is family-friendly", "welcomes children", "is child-friendly"]},
        "no": {"adjective": ["adults-only"], "sentence": ["Children are not welcome."],
               "clause": ["is not family-friendly", "does not welcome children", "is not child-friendly"]},
    },
}

# The phrases that say each value (what slot_errors looks for). A test checks that every generated
# reference is read back as exactly its MR.
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


# ---- template families -----------------------------------------------------------------------------

class _Plan:
    """One sentence plan in the making: the MR, a random generator, and the slots not said yet."""

    def __init__(self, mr, rng):
        self.mr, self.rng = mr, rng
        self.left = [slot for slot in SLOTS if slot in mr and slot != "name"]
        self.name = mr["name"]

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def take(self, slot, chance=1.0):
        """True (and the slot counts as said) if it is still to say and a coin with `chance` agrees."""
        if slot in self.left and (chance >= 1.0 or self.rng.random() < chance):
            self.left.remove(slot)
            return True
        return False

    def noun_phrase(self, adjectives=True):
        """'a cheap, family-friendly Italian coffee shop': price and family adjectives (coordinate,
        so a comma between them), then the food (a noun modifier, no comma), then the noun."""
        coordinate = [self.pick(LEXICON[slot][self.mr[slot]]["adjective"])
                      for slot in ("priceRange", "familyFriendly") if adjectives and self.take(slot, 0.6)]
        words = ", ".join(coordinate)
        if self.take("food", 0.9 if adjectives else 0.0):
            words += " " + self.mr["food"]
        noun = self.mr["eatType"] if self.take("eatType") else self.pick(["place", "venue"])
        return with_article(f"{words} {noun}".strip())

    def places(self, chance=0.8):
        """' in the city centre near Burger King', each part with probability `chance`."""
        parts = []
        if self.take("area", chance):
            parts.append(self.pick(LEXICON["area"][self.mr["area"]]["place"]))
        if self.take("near", chance):
            parts.append(self.pick(["near", "close to", "not far from"]) + " " + self.mr["near"])
        return "".join(" " + p for p in parts)

    def clause(self, slot):
        """A verb phrase for a singular subject that says the slot: 'serves Italian food'."""
        value = self.mr[slot]
        if slot == "eatType":
            return "is " + with_article(value)
        if slot == "food":
            return self.pick(["serves", "offers"]) + " " + food_noun(value)
        if slot == "area":
            return self.pick(["is ", "is located "]) + self.pick(LEXICON["area"][value]["place"])
        if slot == "near":
            return self.pick(["is near", "is close to", "is not far from"]) + " " + value
        return self.pick(LEXICON[slot][value]["clause"])

    def clauses(self, first=()):
        """Clauses for every slot still to say (`first` in front, the rest shuffled), all said."""
        ahead = [slot for slot in first if slot in self.left]
        rest = [slot for slot in self.left if slot not in ahead]
        rest = [rest[i] for i in self.rng.permutation(len(rest))]
        self.left = []
        return [self.clause(slot) for slot in ahead + rest]

    def it_sentence(self):
        """' It has high prices and is near Burger King.' for whatever is left ('' if nothing)."""
        return f" It {join_list(self.clauses())}." if self.left else ""


def copula(p):          # The Eagle is a cheap Italian pub in the riverside area. It is child-friendly.
    return f"{p.name} is {p.noun_phrase()}{p.places()}." + p.it_sentence()


def there_is(p):        # There is an Italian pub called The Eagle near Burger King. It has ...
    return f"There is {p.noun_phrase()} {p.pick(['called', 'named'])} {p.name}{p.places()}." + p.it_sentence()


def serves(p):          # The Eagle is a pub that serves Italian food, has low prices and ...
    head = f"{p.name} is {with_article(p.mr['eatType'])} that " if p.take("eatType") else f"{p.name} "
    return head + join_list(p.clauses(first=("food",))) + "."


def rating_lead(p):     # With a high customer rating, The Eagle is ... / Rated 5 out of 5 by customers, ...
    if "customer rating" in p.left:
        forms = LEXICON["customer rating"][p.mr["customer rating"]]
        lead = p.pick(["With " + forms["with"][0], forms["lead"][0]])
        p.take("customer rating")
    elif "priceRange" in p.left:
        lead = "With " + LEXICON["priceRange"][p.mr["priceRange"]]["with"][0]
        p.take("priceRange")
    else:
        return copula(p)
    return f"{lead}, {p.name} is {p.noun_phrase()}{p.places()}." + p.it_sentence()


def appositive(p):      # A cheap Italian pub in the city centre, The Eagle has a high customer rating.
    phrase = p.noun_phrase() + p.places()
    if not p.left:
        return f"{p.name} is {phrase}."
    return f"{phrase[0].upper()}{phrase[1:]}, {p.name} {join_list(p.clauses())}."


def located_lead(p):    # Located in the city centre near Burger King, The Eagle is ...      (held out)
    if not any(slot in p.left for slot in ("area", "near")):
        return this_noun(p)
    where = p.places(chance=1.0)
    return f"{p.pick(['Located', 'Situated'])}{where}, {p.name} is {p.noun_phrase()}." + p.it_sentence()


def recommend(p):       # If you want a cheap Italian pub, try The Eagle, which is ...        (held out)
    wish = p.pick(["are looking for", "want"])
    head = f"If you {wish} {p.noun_phrase()}{p.places(chance=0.5)}, try {p.name}"
    return head + (f", which {join_list(p.clauses())}." if p.left else ".")


def this_noun(p):       # The Eagle is a pub by the riverside. This pub serves ... Children are welcome.  (held out)
    noun = p.mr["eatType"] if p.take("eatType") else "place"
    first = f"{p.name} is {with_article(noun)}{p.places(chance=0.5)}."
    children = ""
    if p.take("familyFriendly", 0.5):
        children = " " + LEXICON["familyFriendly"][p.mr["familyFriendly"]]["sentence"][0]
    rest = f" This {noun} {join_list(p.clauses())}." if p.left else ""
    return first + rest + children


TRAIN_FAMILIES = {"copula": copula, "there_is": there_is, "serves": serves, "rating_lead": rating_lead,
                  "appositive": appositive}
HELD_OUT_FAMILIES = {"located_lead": located_lead, "recommend": recommend, "this_noun": this_noun}
FAMILIES = {**TRAIN_FAMILIES, **HELD_OUT_FAMILIES}


def realise(mr, family, rng):
    """One sentence (or two or three) saying every slot of the MR, in the given template family."""
    if family not in FAMILIES:
        raise ValueError(f"unknown template family {family!r}: choose one of {', '.join(FAMILIES)}")
    mr = validate_mr(mr)
    if "name" not in mr:
        raise ValueError("the templates need a 'name' slot")
    plan = _Plan(mr, rng)
    text = FAMILIES[family](plan)
    assert not plan.left, f"family {family} left {plan.left} unsaid"
    return text


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
