"""E2E-style meaning representations, and the templates that write them as sentences.

No package ships the E2E NLG data, so tinymix writes restaurant descriptions from
meaning representations (MRs) itself:

    {"name": "The Eagle", "eatType": "pub", "food": "Italian", "area": "riverside"}
    -> "The Eagle is an Italian pub in the riverside area."
    -> "There is an Italian pub called The Eagle by the riverside."        (another template family)

The eight slots are E2E's: name, eatType, food, priceRange, customer rating, area, familyFriendly,
near. Sentences come from TEMPLATE FAMILIES (sentence plans such as "X is a ...", "There is a ...
called X", "If you want a ..., try X"); inside a family the wording varies (synonyms, the order of
clauses). Grammar is done by rule, not by hand-written strings: `with_article` picks "a" or "an" by
the sound of the next word ("an Italian pub", "a cheap Italian pub", "an expensive pub"), `join_list`
writes lists ("X, Y and Z"), and every clause agrees with its singular subject ("It serves ... and
has ..."). TRAIN_FAMILIES write the training and validation sentences; HELD_OUT_FAMILIES are seen
only in the test references (e2e/__init__.py builds the splits and the scores).
"""
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
