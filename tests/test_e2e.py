"""The E2E-style task: the held-out splits, the pretraining sentences, the prompt, and the two scores
(the templates' grammar: test_e2e_templates.py).

Every BLEU value below is worked out by hand in the comments (n-gram counts, then the formula), not
taken from the implementation.
"""
import math
import re

import pytest

from tinymix import e2e


@pytest.fixture(scope="module")
def splits():
    return e2e.make_splits(train_size=300, validation_size=40, test_size=60, seed=0)


def all_references(splits):
    return [(ex, ref, family) for examples in splits.values() for ex in examples
            for ref, family in zip(ex.references, ex.families)]


# ---- the scorer reads the templates ------------------------------------------------------------------

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


HELD_OUT_OPENINGS = r"^(Located|Situated|If you)\b|\. This (pub|restaurant|coffee shop|place)\b"


def said_mr(text):
    """The MR a sentence says, read back by the scorer (one value per slot)."""
    return {slot: min(values) for slot, values in e2e.find_values(text).items()}


def test_pretraining_sentences_hold_out_test_combinations_and_families():
    owner = e2e.combination_splits(seed=0)
    corpus = e2e.domain_sentences(3000, seed=0)
    texts = [ex.references[0] for ex in corpus]
    assert len(texts) == 3000 and all(len(ex.references) == len(ex.families) == 1 for ex in corpus)
    assert {ex.families[0] for ex in corpus} == set(e2e.TRAIN_FAMILIES)      # all five and only those
    # what each sentence SAYS (read back from its text) is a training combination
    assert all(owner[e2e.combination(said_mr(text))] == "train" for text in texts)
    assert not [t for t in texts if re.search(HELD_OUT_OPENINGS, t)]
    test = e2e.make_splits(2000, 100, 200, seed=0)["test"]
    assert {e2e.combination(ex.mr) for ex in test}.isdisjoint(e2e.combination(ex.mr) for ex in corpus)
    assert {r for ex in test for r in ex.references}.isdisjoint(texts)
    # the held-out measuring set: validation combinations in held-out families only
    held_out = e2e.domain_sentences(300, "validation", tuple(e2e.HELD_OUT_FAMILIES))
    assert all(owner[e2e.combination(said_mr(ex.references[0]))] == "validation" for ex in held_out)
    assert {ex.families[0] for ex in held_out} == set(e2e.HELD_OUT_FAMILIES)
    # deterministic by seed
    assert [ex.references for ex in e2e.domain_sentences(50, seed=0)] == [[t] for t in texts[:50]]
    assert [ex.references for ex in e2e.domain_sentences(50, seed=1)] != [[t] for t in texts[:50]]


def test_pretraining_texts_can_describe_one_restaurant_several_times():
    for ex in e2e.domain_sentences(200, descriptions=3, seed=2):
        assert len(ex.references) == len(set(ex.families)) == 3 and set(ex.families) <= set(e2e.TRAIN_FAMILIES)
        for reference in ex.references:               # each description says the whole MR
            errors = e2e.slot_errors(ex.mr, reference)
            assert errors["missing"] == errors["wrong"] == [], (ex.mr, reference)


def test_pretraining_sentences_bad_arguments():
    with pytest.raises(ValueError, match="split must be"):
        e2e.domain_sentences(5, split="dev")
    with pytest.raises(ValueError, match="unknown or no template families"):
        e2e.domain_sentences(5, families=("copula", "sonnet"))
    with pytest.raises(ValueError, match="at least 0"):
        e2e.domain_sentences(-1)
    with pytest.raises(ValueError, match="descriptions must be between 1 and the 5 families"):
        e2e.domain_sentences(5, descriptions=6)


def test_prompts_and_bad_mrs():
    mr = {"name": "The Eagle", "food": "fast food", "customer rating": "5 out of 5", "near": "Burger King"}
    prompt = e2e.format_mr(mr)
    assert prompt == "name The Eagle, food fast food, rating 5 out of 5, near Burger King =>"
    with pytest.raises(ValueError, match="empty meaning representation"):
        e2e.format_mr({})
    with pytest.raises(ValueError, match="unknown slot.*colour"):
        e2e.format_mr({"name": "The Eagle", "colour": "red"})
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


def sacrebleu_on_bleu_tokens(sacrebleu, hypotheses, references):
    """sacreBLEU's corpus BLEU on tinymix's tokens: each text lower-cased and split by e2e.bleu_tokens,
    joined by spaces, and given to sacreBLEU with its own tokenisation off, no smoothing. sacreBLEU
    takes references as streams (the k-th reference of every sentence); None pads the shorter lists."""
    joined = lambda text: " ".join(e2e.bleu_tokens(text))
    width = max(len(refs) for refs in references)
    streams = [[joined(refs[k]) if k < len(refs) else None for refs in references] for k in range(width)]
    return sacrebleu.corpus_bleu([joined(h) for h in hypotheses], streams, tokenize="none",
                                 smooth_method="none", lowercase=False, force=True)


def test_bleu_equals_sacrebleu_on_the_same_tokens(splits):
    """tinymix's corpus BLEU is sacreBLEU's (n-gram counts, clipping, closest reference length with ties
    to the shorter, brevity penalty), on a corpus with 1 to 10 references per sentence, hypotheses
    shortened, reordered and mis-worded, and a corpus whose 4-gram precision is zero."""
    sacrebleu = pytest.importorskip("sacrebleu")
    rng = e2e.backend.host_generator(7)
    hypotheses, references = [], []
    for i, ex in enumerate(splits["test"]):
        words = ex.references[0].split()
        kind = i % 4
        if kind == 1:
            words = words[:max(2, len(words) * 2 // 3)]                    # shorter: brevity penalty
        elif kind == 2:
            words = [w for j, w in enumerate(words) if j % 5 != 2] + ["nearby", "indeed", "."]
        elif kind == 3:
            start = int(rng.integers(len(words)))
            words = words[start:] + words[:start]                          # reordered
        hypotheses.append(" ".join(words))
        references.append(ex.references[1:][:1 + i % len(ex.references[1:])])
    ours = e2e.corpus_bleu(hypotheses, references)
    theirs = sacrebleu_on_bleu_tokens(sacrebleu, hypotheses, references)
    assert 0.2 < ours["bleu"] < 0.9 and ours["bp"] < 1.0                   # a corpus that tests something
    assert (ours["hyp_length"], ours["ref_length"]) == (theirs.sys_len, theirs.ref_len)
    assert [100 * p for p in ours["precisions"]] == pytest.approx(theirs.precisions, rel=1e-12)
    assert 100 * ours["bp"] == pytest.approx(100 * theirs.bp, rel=1e-12)
    assert 100 * ours["bleu"] == pytest.approx(theirs.score, rel=1e-12)
    no_four_grams = (["the eagle pub cheap", "a b c"], [["the eagle is a pub"], ["a b d"]])
    assert e2e.corpus_bleu(*no_four_grams)["bleu"] == 0.0
    assert sacrebleu_on_bleu_tokens(sacrebleu, *no_four_grams).score == 0.0


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
