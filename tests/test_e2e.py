"""The E2E-style task: grammar of the generated sentences, the held-out splits, and the two scores.

Every BLEU value below is worked out by hand in the comments (n-gram counts, then the formula), not
taken from the implementation.
"""
import math
import re

import pytest

from tinymix import e2e

# Words after which the templates must write "an" (a vowel sound); every other word takes "a".
AN_WORDS = {"Italian", "English", "Indian", "expensive", "adults-only", "average"}


@pytest.fixture(scope="module")
def splits():
    return e2e.make_splits(train_size=300, validation_size=40, test_size=60, seed=0)


def all_references(splits):
    return [(ex, ref, family) for examples in splits.values() for ex in examples
            for ref, family in zip(ex.references, ex.families)]


# ---- grammar -----------------------------------------------------------------------------------------

def test_articles_lists_and_food_nouns():
    assert e2e.with_article("Italian pub") == "an Italian pub"
    assert e2e.with_article("cheap Italian pub") == "a cheap Italian pub"
    assert e2e.with_article("expensive, adults-only pub") == "an expensive, adults-only pub"
    assert e2e.with_article("English restaurant") == "an English restaurant"
    assert e2e.with_article("Japanese coffee shop") == "a Japanese coffee shop"
    assert e2e.with_article("high customer rating") == "a high customer rating"
    assert e2e.with_article("hour") == "an hour" and e2e.with_article("unique place") == "a unique place"
    assert e2e.join_list(["a"]) == "a"
    assert e2e.join_list(["a", "b"]) == "a and b"
    assert e2e.join_list(["a", "b", "c"]) == "a, b and c"
    assert e2e.food_noun("fast food") == "fast food" and e2e.food_noun("French") == "French food"
    with pytest.raises(ValueError):
        e2e.join_list([])


def test_one_family_on_one_mr_reads_as_expected():
    mr = {"name": "The Eagle", "eatType": "pub", "food": "Italian"}
    rng = e2e.backend.host_generator(0)
    text = e2e.realise(mr, "copula", rng)      # food goes in the noun phrase (or, 1 time in 10, a clause)
    assert re.fullmatch(r"The Eagle is an Italian pub\.|The Eagle is a pub\. It (serves|offers) Italian food\.", text), text
    text = e2e.realise({**mr, "area": "riverside"}, "there_is", e2e.backend.host_generator(1))
    assert re.fullmatch(r"There is an Italian pub (called|named) The Eagle (in the riverside area|by the "
                        r"riverside|on the riverside)\.|There is an Italian pub (called|named) The Eagle\. "
                        r"It is (located )?(in the riverside area|by the riverside|on the riverside)\.", text), text


def test_generated_sentences_are_grammatical(splits):
    for ex, ref, family in all_references(splits):
        assert ref[0].isupper() and ref.endswith("."), ref
        assert "  " not in ref and " ," not in ref and " ." not in ref and ", and" not in ref, ref
        assert "food food" not in ref, ref
        for article, word in re.findall(r"\b(a|an|A|An) ([\w-]+)", ref):
            wants_an = word in AN_WORDS
            assert (article.lower() == "an") == wants_an, f"'{article} {word}' in: {ref}"
        # singular subjects take singular verbs; "children" takes a plural one
        assert not re.search(r"\b(It|which) (are|have|serve|offer|welcome)\b", ref), ref
        assert not re.search(r"\bChildren (is|was)\b", ref), ref
        for sentence in re.split(r"(?<=\.) ", ref):
            assert sentence[0].isupper(), ref


def test_every_reference_says_exactly_its_mr(splits):
    """The scorer reads each reference back as its MR: nothing missing, wrong or added."""
    for ex, ref, family in all_references(splits):
        errors = e2e.slot_errors(ex.mr, ref)
        assert errors["missing"] == errors["wrong"] == errors["added"] == [], (family, ex.mr, ref, errors)


# ---- the data set ---------------------------------------------------------------------------------

def test_splits_are_deterministic_by_seed():
    a = e2e.make_splits(40, 10, 10, seed=5)
    b = e2e.make_splits(40, 10, 10, seed=5)
    c = e2e.make_splits(40, 10, 10, seed=6)
    assert [(x.mr, x.references) for x in a["test"]] == [(x.mr, x.references) for x in b["test"]]
    assert [x.mr for x in a["train"]] != [x.mr for x in c["train"]]


def test_splits_hold_out_combinations_and_template_families(splits):
    combos = {name: {e2e.combination(ex.mr) for ex in examples} for name, examples in splits.items()}
    assert not combos["test"] & combos["train"] and not combos["validation"] & combos["train"]
    assert not combos["test"] & combos["validation"]
    seen = {(slot, value) for ex in splits["train"] for slot, value in ex.mr.items()}
    for ex in splits["test"]:                        # unseen combinations of values seen in training
        assert all((slot, value) in seen for slot, value in ex.mr.items() if slot in e2e.COMBINATION_SLOTS)
    for name in ("train", "validation"):
        assert {f for ex in splits[name] for f in ex.families} <= set(e2e.TRAIN_FAMILIES)
    assert all(len(ex.references) == 1 for ex in splits["train"])
    assert all(ex.families == list(e2e.FAMILIES) for ex in splits["test"])
    assert set(e2e.HELD_OUT_FAMILIES).isdisjoint(e2e.TRAIN_FAMILIES)
    sizes = [len(ex.mr) for ex in splits["train"]]
    assert min(sizes) == 3 and max(sizes) == 6 and all("name" in ex.mr for ex in splits["train"])


def test_prompt_round_trip_and_bad_mrs():
    mr = {"name": "The Eagle", "food": "fast food", "customer rating": "5 out of 5", "near": "Burger King"}
    prompt = e2e.format_mr(mr)
    assert prompt == "name The Eagle, food fast food, rating 5 out of 5, near Burger King =>"
    assert e2e.parse_mr(prompt) == mr
    with pytest.raises(ValueError, match="empty meaning representation"):
        e2e.format_mr({})
    with pytest.raises(ValueError, match="empty meaning representation"):
        e2e.parse_mr(" =>")
    with pytest.raises(ValueError, match="unknown slot.*colour"):
        e2e.format_mr({"name": "The Eagle", "colour": "red"})
    with pytest.raises(ValueError, match="unknown slot 'colour'"):
        e2e.parse_mr("name The Eagle, colour red =>")
    with pytest.raises(ValueError, match="no value 'Thai'"):
        e2e.format_mr({"name": "The Eagle", "food": "Thai"})
    with pytest.raises(ValueError, match="commas"):
        e2e.format_mr({"name": "Eagle, The"})
    with pytest.raises(ValueError, match="needs? a 'name'"):
        e2e.realise({"food": "Italian", "area": "riverside"}, "copula", e2e.backend.host_generator(0))


# ---- BLEU, by hand -----------------------------------------------------------------------------------

def test_bleu_of_an_exact_match_is_one():
    result = e2e.corpus_bleu(["The Eagle is a cheap pub."], [["The Eagle is a cheap pub."]])
    assert result["bleu"] == pytest.approx(1.0) and result["bp"] == 1.0


def test_bleu_one_word_substituted():
    # hyp:  the eagle is a cheap pub          (6 tokens)
    # ref:  the eagle is a cheap restaurant   (6 tokens)
    # matches: unigrams 5/6, bigrams 4/5, trigrams 3/4, 4-grams 2/3; c = r = 6 so BP = 1
    # BLEU = (5/6 * 4/5 * 3/4 * 2/3) ** (1/4) = (1/3) ** (1/4) = 0.7598...
    result = e2e.corpus_bleu(["the eagle is a cheap pub"], [["the eagle is a cheap restaurant"]])
    assert result["precisions"] == pytest.approx([5 / 6, 4 / 5, 3 / 4, 2 / 3])
    assert result["bleu"] == pytest.approx((1 / 3) ** 0.25)
    assert result["bleu"] == pytest.approx(0.759836, abs=1e-6)


def test_bleu_brevity_penalty():
    # hyp: 5 tokens, all in the 6-token reference: every precision 1; BP = exp(1 - 6/5) = exp(-0.2)
    result = e2e.corpus_bleu(["the eagle is a cheap"], [["the eagle is a cheap pub"]])
    assert result["bleu"] == pytest.approx(math.exp(-0.2)) and result["ref_length"] == 6


def test_bleu_closest_reference_length_and_ties():
    hyp = "the eagle is a cheap pub"                    # 6 tokens, a part of the 7-token reference
    # references of 4 and 7 tokens: 7 is closer (1 < 2), r = 7, BP = exp(1 - 7/6)
    result = e2e.corpus_bleu([hyp], [["the eagle pub .", "the eagle is a cheap pub nearby"]])
    assert result["ref_length"] == 7 and result["bleu"] == pytest.approx(math.exp(1 - 7 / 6))
    # references of 5 and 7 tokens are equally close: the shorter counts, r = 5 < c = 6, BP = 1
    result = e2e.corpus_bleu([hyp], [["a cheap pub , then", "the eagle is a cheap pub nearby"]])
    assert result["ref_length"] == 5 and result["bp"] == 1.0


def test_bleu_clips_counts_by_the_best_single_reference():
    # hyp "the the the": "the" occurs at most twice in one reference -> unigram precision 2/3
    result = e2e.corpus_bleu(["the the the"], [["the cat", "the the dog"]])
    assert result["precisions"][0] == pytest.approx(2 / 3)
    assert result["bleu"] == 0.0                        # no 3-gram matches: BLEU without smoothing is 0


def test_bleu_is_pooled_over_the_corpus_not_averaged():
    # segment 1 exact (4 tokens): 4/4, 3/3, 2/2, 1/1; segment 2 as in the substitution case:
    # 5/6, 4/5, 3/4, 2/3. Pooled: 9/10, 7/8, 5/6, 3/4; c = r = 10.
    hyps = ["the mill is good", "the eagle is a cheap pub"]
    refs = [["the mill is good"], ["the eagle is a cheap restaurant"]]
    result = e2e.corpus_bleu(hyps, refs)
    assert result["precisions"] == pytest.approx([9 / 10, 7 / 8, 5 / 6, 3 / 4])
    assert result["bleu"] == pytest.approx((9 / 10 * 7 / 8 * 5 / 6 * 3 / 4) ** 0.25)
    assert e2e.bleu_tokens("The Eagle, a pub.") == ["the", "eagle", ",", "a", "pub", "."]
    with pytest.raises(ValueError, match="LIST of references"):
        e2e.corpus_bleu(["a b"], ["a b"])


# ---- slot errors -----------------------------------------------------------------------------------

def test_slot_errors_by_hand():
    mr = {"name": "The Eagle", "food": "Italian", "area": "riverside", "familyFriendly": "no"}
    # name and food said; area contradicted (city centre); "family-friendly" contradicts "no"; pub added
    text = "The Eagle is an Italian pub in the city centre. It is family-friendly."
    errors = e2e.slot_errors(mr, text)
    assert errors == {"slots": 4, "missing": [], "wrong": ["area", "familyFriendly"], "added": ["eatType"]}
    # "not family-friendly" says "no" (and is not read as "yes"); the area is simply missing
    errors = e2e.slot_errors(mr, "The Eagle serves Italian food and is not family-friendly.")
    assert errors == {"slots": 4, "missing": ["area"], "wrong": [], "added": []}
    # another restaurant's name instead of The Eagle: the name is wrong
    errors = e2e.slot_errors({"name": "The Eagle", "food": "Indian"}, "Zizzi serves Indian food.")
    assert errors["wrong"] == ["name"] and errors["missing"] == []
    rate = e2e.slot_error_rate([mr, mr], [text, "The Eagle is an Italian place by the riverside. Children are not welcome."])
    assert rate["rate"] == pytest.approx(2 / 8) and rate["added"] == 1
    # a name outside the built-in pools still counts, since it comes from the MR
    assert e2e.slot_errors({"name": "Blue Spice", "food": "Chinese"}, "Blue Spice serves Chinese food.")["missing"] == []
