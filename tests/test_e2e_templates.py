"""The templates of the E2E-style task: articles, lists, agreement, and each family's shape."""
import re

import pytest

from tinymix import backend, e2e
from tinymix.e2e import templates

# Words after which the templates must write "an" (a vowel sound); every other word takes "a".
AN_WORDS = {"Italian", "English", "Indian", "expensive", "adults-only", "average"}


@pytest.fixture(scope="module")
def references():
    splits = e2e.make_splits(train_size=300, validation_size=40, test_size=60, seed=0)
    return [ref for examples in splits.values() for ex in examples for ref in ex.references]


def test_articles_lists_and_food_nouns():
    assert templates.with_article("Italian pub") == "an Italian pub"
    assert templates.with_article("cheap Italian pub") == "a cheap Italian pub"
    assert templates.with_article("expensive, adults-only pub") == "an expensive, adults-only pub"
    assert templates.with_article("English restaurant") == "an English restaurant"
    assert templates.with_article("Japanese coffee shop") == "a Japanese coffee shop"
    assert templates.with_article("high customer rating") == "a high customer rating"
    assert templates.with_article("hour") == "an hour" and templates.with_article("unique place") == "a unique place"
    assert templates.join_list(["a"]) == "a"
    assert templates.join_list(["a", "b"]) == "a and b"
    assert templates.join_list(["a", "b", "c"]) == "a, b and c"
    assert templates.food_noun("fast food") == "fast food" and templates.food_noun("French") == "French food"
    with pytest.raises(ValueError):
        templates.join_list([])


def test_one_family_on_one_mr_reads_as_expected():
    mr = {"name": "The Eagle", "eatType": "pub", "food": "Italian"}
    rng = backend.host_generator(0)
    text = templates.realise(mr, "copula", rng)      # food goes in the noun phrase (or, 1 time in 10, a clause)
    assert re.fullmatch(r"The Eagle is an Italian pub\.|The Eagle is a pub\. It (serves|offers) Italian food\.", text), text
    text = templates.realise({**mr, "area": "riverside"}, "there_is", backend.host_generator(1))
    assert re.fullmatch(r"There is an Italian pub (called|named) The Eagle (in the riverside area|by the "
                        r"riverside|on the riverside)\.|There is an Italian pub (called|named) The Eagle\. "
                        r"It is (located )?(in the riverside area|by the riverside|on the riverside)\.", text), text


def test_generated_sentences_are_grammatical(references):
    for ref in references:
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
