"""Text data: sources to packed token windows, and the demo corpus.

:func:`load_tokens` turns a text source (the demo corpus, local ``.txt``/``.jsonl``/
``.parquet`` files or a folder of them, or a Hugging Face dataset, streamed) into a
LongTensor ``[n_windows, ctx_len]`` whose windows each start with BOS, as SAELens
packs them: documents are joined by a separator token (the BOS token) and cut into
windows of ``ctx_len - 1`` tokens, each prefixed with BOS. :func:`token_mask` is
False at BOS, separators and padding, which no activation statistic should see; it and
the document-start rule live in :mod:`saekit.tokenization` and are re-exported here.

The demo corpus: generated English with planted concepts, plus real prose.

Half of the demo LM's training text is generated here from templates in which seven
concept families appear: days of the week, months, colours, numbers, animals, cities
and emotions. Each family is split into groups with structure the model can learn
(weekday vs weekend, warm vs cold colours, the season of a month, ...), and the
templates make the group predict later words ("On Saturday ... stayed home and
rested"). Every concept word is one token of the demo tokenizer, so which tokens
carry which concept is known exactly: :func:`concept_labels` returns it.

The other half is the committed snapshot of Python's own documentation
(``checkpoints/demo-lm/corpus/python-docs.jsonl.xz``), read by :func:`prose_documents`.
"""

from __future__ import annotations

import itertools
import json
import lzma
import math
import random
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

# Re-exported: saekit.data.token_mask (and the rest) were defined here first.
from saekit.tokenization import (  # noqa: F401
    DOCUMENT_SEPARATORS,
    document_start,
    get_tokenizer,
    special_ids,
    text_convention,
    token_mask,
)

#: family -> group -> words. Every word is a single token of the demo tokenizer
#: (with its leading space), and no word belongs to two families.
CONCEPTS: dict[str, dict[str, list[str]]] = {
    "day": {
        "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
        "weekend": ["Saturday", "Sunday"],
    },
    "month": {
        "winter": ["December", "January", "February"],
        "spring": ["March", "April", "May"],
        "summer": ["June", "July", "August"],
        "autumn": ["September", "October", "November"],
    },
    "colour": {
        "warm": ["red", "orange", "yellow", "pink"],
        "cold": ["blue", "green", "purple", "grey"],
    },
    "number": {
        "small": ["one", "two", "three", "four", "five"],
        "large": ["six", "seven", "eight", "nine", "ten"],
    },
    "animal": {
        "farm": ["dog", "cat", "horse", "cow", "sheep", "pig"],
        "wild": ["lion", "tiger", "bear", "wolf", "fox", "deer"],
    },
    "city": {
        "europe": ["Paris", "London", "Berlin", "Rome", "Madrid", "Vienna"],
        "asia": ["Tokyo", "Beijing", "Delhi", "Seoul", "Bangkok", "Manila"],
    },
    "emotion": {
        "positive": ["happy", "glad", "proud", "calm", "cheerful"],
        "negative": ["sad", "angry", "afraid", "lonely", "upset"],
    },
}

FAMILIES: list[str] = list(CONCEPTS)

#: Special tokens of the demo tokenizer: BOS (also the document separator) and padding.
DEFAULT_BOS = "<|endoftext|>"
DEFAULT_PAD = "<|pad|>"

COUNTRY = {
    "Paris": "France", "London": "England", "Berlin": "Germany", "Rome": "Italy",
    "Madrid": "Spain", "Vienna": "Austria", "Tokyo": "Japan", "Beijing": "China",
    "Delhi": "India", "Seoul": "Korea", "Bangkok": "Thailand", "Manila": "the Philippines",
}
SEASON_WEATHER = {"winter": "cold and dark", "spring": "mild and fresh",
                  "summer": "hot and bright", "autumn": "cool and windy"}
SOUND = {"dog": "barked", "cat": "meowed", "horse": "neighed", "cow": "mooed",
         "sheep": "bleated", "pig": "grunted", "lion": "roared", "tiger": "growled",
         "bear": "growled", "wolf": "howled", "fox": "yelped", "deer": "bellowed"}
NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Henry", "Iris",
         "Jack", "Lena", "Max", "Nora", "Oscar", "Paul", "Ruth", "Sam", "Tom"]
PLACES = ["the market", "the park", "the station", "the river", "the library", "school"]


def _word(rng: random.Random, family: str, group: str | None = None) -> tuple[str, str]:
    groups = CONCEPTS[family]
    group = group or rng.choice(list(groups))
    return rng.choice(groups[group]), group


def _sentence(rng: random.Random) -> str:
    """One sentence from a random template; the group of each concept shapes its words."""
    name = rng.choice(NAMES)
    kind = rng.randrange(12)
    if kind == 0:
        day, group = _word(rng, "day")
        if group == "weekend":
            return f"On {day} {name} stayed at home and rested, because it was the weekend."
        return f"On {day} {name} went to work early, because it was a weekday."
    if kind == 1:
        day, group = _word(rng, "day")
        return f"{day} is a {'day of the weekend' if group == 'weekend' else 'weekday'}."
    if kind == 2:
        month, season = _word(rng, "month")
        return f"In {month} the weather is {SEASON_WEATHER[season]}, as it is in {season}."
    if kind == 3:
        colour, group = _word(rng, "colour")
        thing = "fire and the sun" if group == "warm" else "ice and the sea"
        return f"The {colour} light looked {group}, like {thing}."
    if kind == 4:
        colour, _ = _word(rng, "colour")
        animal, _ = _word(rng, "animal")
        return f"{name} painted the {animal} {colour} and hung the picture in {rng.choice(PLACES)}."
    if kind == 5:
        words = CONCEPTS["number"]["small"] + CONCEPTS["number"]["large"]
        i = rng.randrange(len(words) - 3)
        return f"{name} counted {', '.join(words[i:i + 4])}."
    if kind == 6:
        words = CONCEPTS["number"]["small"] + CONCEPTS["number"]["large"]
        a = rng.randrange(1, 6)
        b = rng.randrange(1, 11 - a)
        return f"Then {words[a - 1]} plus {words[b - 1]} makes {words[a + b - 1]}."
    if kind == 7:
        animal, group = _word(rng, "animal")
        home = "on the farm" if group == "farm" else "in the forest"
        return f"The {animal} {SOUND[animal]} {home}."
    if kind == 8:
        city, _ = _word(rng, "city")
        return f"{name} flew to {city}, a big city in {COUNTRY[city]}."
    if kind == 9:
        emotion, group = _word(rng, "emotion")
        if group == "positive":
            return f"{name} felt {emotion} and smiled at everyone."
        return f"{name} felt {emotion} and cried alone."
    if kind == 10:
        day, _ = _word(rng, "day")
        month, _ = _word(rng, "month")
        city, _ = _word(rng, "city")
        return f"On a {day} in {month}, {name} visited {city}."
    emotion, group = _word(rng, "emotion")
    animal, _ = _word(rng, "animal")
    number, _ = _word(rng, "number")
    return f"{name} saw the {animal} {number} times and was {emotion}."


def generated_documents(n_docs: int | None = None, seed: int = 0) -> Iterator[str]:
    """Paragraphs of 3-8 generated sentences; endless when ``n_docs`` is None.

    Deterministic in ``seed``: the same seed gives the same documents on any machine.
    """
    rng = random.Random(seed)
    i = 0
    while n_docs is None or i < n_docs:
        yield " ".join(_sentence(rng) for _ in range(rng.randint(3, 8)))
        i += 1


def snapshot_path() -> Path:
    return Path(__file__).resolve().parent.parent / "checkpoints" / "demo-lm" / "corpus" / "python-docs.jsonl.xz"


def prose_documents(path: str | Path | None = None) -> list[str]:
    """The committed Python-documentation snapshot, one string per document."""
    path = Path(path) if path else snapshot_path()
    if not path.exists():
        raise FileNotFoundError(
            f"demo corpus snapshot {path} is missing; it is committed with saekit "
            "(rebuild it with train/build_corpus_snapshot.py)"
        )
    with lzma.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def is_heldout(index: int) -> bool:
    """Every 20th prose document is held out of the demo LM's training set."""
    return index % 20 == 7


def demo_documents(split: str = "train", seed: int = 0) -> Iterator[str]:
    """The demo corpus, endless: generated and prose documents interleaved.

    The generated stream is seeded by ``seed`` (held-out text uses ``seed + 10_000``)
    and the prose documents cycle in a seeded order, about one prose document per
    four generated ones, which balances the two halves by tokens.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    prose = [d for i, d in enumerate(prose_documents()) if is_heldout(i) == (split == "heldout")]
    gen = generated_documents(seed=seed + (10_000 if split == "heldout" else 0))
    rng = random.Random(seed + 1)
    while True:
        order = list(range(len(prose)))
        rng.shuffle(order)
        for j in order:
            for _ in range(4):
                yield next(gen)
            yield prose[j]


def english_path() -> Path:
    return Path(__file__).resolve().parent.parent / "checkpoints" / "english" / "english.jsonl.xz"


def is_english_heldout(index: int) -> bool:
    """Every 10th document of the English corpus is held out."""
    return index % 10 == 3


def english_documents(split: str = "train", seed: int = 0) -> Iterator[str]:
    """The committed real-English corpus (``checkpoints/english``): the Python 3.11
    documentation as prose and common licence texts: 1.96M SmolLM2 tokens to train on,
    0.19M held out (see its README for sources and licences). Finite: the documents of
    one split, in an order shuffled by ``seed`` so windows mix topics."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    path = english_path()
    if not path.exists():
        raise FileNotFoundError(f"English corpus {path} is missing; it is committed with saekit "
                                "(rebuild it with train/build_english_corpus.py)")
    with lzma.open(path, "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    docs = [d for i, d in enumerate(docs) if is_english_heldout(i) == (split == "heldout")]
    random.Random(seed).shuffle(docs)
    yield from docs


# --------------------------------------------------------------------------- sources


def _read_txt(path: Path) -> Iterator[str]:
    yield path.read_text(encoding="utf-8", errors="replace")


def _stream_dataset(name: str, *, split: str, text_column: str, config: str | None = None,
                    data_files: Any = None) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True, data_files=data_files)
    except Exception as e:  # offline without a cache, unknown name, bad files
        raise RuntimeError(f"could not open dataset {name!r} (split {split!r}): {e}") from e
    for i, row in enumerate(ds):
        if text_column not in row:
            raise KeyError(
                f"dataset {name!r} row {i} has no column {text_column!r}; "
                f"columns are {sorted(row)} (pass text_column=...)"
            )
        yield row[text_column]


BUILTIN_CORPORA = {"demo": demo_documents, "english": english_documents}
SUFFIX_BUILDER = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def text_documents(source: str | Path | Iterable[str], *, split: str = "train",
                   text_column: str = "text", dataset_config: str | None = None,
                   seed: int = 0) -> Iterator[str]:
    """Documents from a source, as strings.

    ``source`` is ``"demo"`` (the demo LM's corpus) or ``"english"`` (real English
    for real models), each with ``split`` or a ``":heldout"``/``":train"`` suffix, a
    ``.txt`` file (one document), a ``.jsonl``/``.parquet`` file (one document per
    row, column ``text_column``), a folder (all ``.txt`` files, or else a dataset
    folder read by ``datasets``), an iterable of strings, or a Hugging Face dataset
    name, streamed.
    """
    if not isinstance(source, (str, Path)):
        yield from source
        return
    src = str(source)
    name, _, suffix = src.partition(":")
    if name in BUILTIN_CORPORA and suffix in ("", "train", "heldout"):
        yield from BUILTIN_CORPORA[name](suffix or split, seed=seed)
        return
    path = Path(src).expanduser()
    if path.is_file():
        if path.suffix == ".txt":
            yield from _read_txt(path)
        elif path.suffix in SUFFIX_BUILDER:
            yield from _stream_dataset(SUFFIX_BUILDER[path.suffix], split="train",
                                       text_column=text_column, data_files=[str(path)])
        else:
            raise ValueError(f"{path}: unsupported text file type {path.suffix!r} "
                             "(expected .txt, .jsonl, .json or .parquet)")
        return
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if files and all(p.suffix == ".txt" for p in files):
            for p in files:
                yield from _read_txt(p)
        else:
            yield from _stream_dataset(str(path), split=split, text_column=text_column,
                                       config=dataset_config)
        return
    if src.startswith((".", "/", "~")) or src.endswith((".txt", ".jsonl", ".parquet")):
        raise FileNotFoundError(f"text source {src!r} does not exist")
    yield from _stream_dataset(src, split=split, text_column=text_column, config=dataset_config)


# --------------------------------------------------------------------------- packing


def pack(token_lists: Iterable[list[int]], ctx_len: int, bos: int, pad: int,
         n_windows: int) -> tuple[torch.Tensor, int]:
    """Pack tokenized documents into at most ``n_windows`` BOS-led windows.

    Documents are joined by ``bos`` as a separator and cut into chunks of
    ``ctx_len - 1`` tokens; a last, partial window is padded with ``pad``.
    Returns the windows and the number of real (non-pad) tokens in them.
    """
    if ctx_len < 2:
        raise ValueError(f"ctx_len must be at least 2 (BOS plus one token), got {ctx_len}")
    body = ctx_len - 1
    out = torch.full((n_windows, ctx_len), pad, dtype=torch.long)
    out[:, 0] = bos
    buf: list[int] = []
    row = 0
    for ids in token_lists:
        if not ids:
            continue
        if buf or row:
            buf.append(bos)
        buf.extend(ids)
        full = min(len(buf) // body, n_windows - row)
        if full:
            out[row:row + full, 1:] = torch.tensor(buf[:full * body]).view(full, body)
            del buf[:full * body]  # one deletion per document, not per window
            row += full
        if row == n_windows:
            return out, n_windows * ctx_len
    if buf:
        out[row, 1:1 + len(buf)] = torch.tensor(buf)
        return out[:row + 1], row * ctx_len + 1 + len(buf)
    return out[:row], row * ctx_len


def load_tokens(source: str | Path | Iterable[str], model: Any, n_tokens: int,
                ctx_len: int = 128, *, split: str = "train", text_column: str = "text",
                dataset_config: str | None = None, seed: int = 0,
                batch_docs: int = 256) -> torch.Tensor:
    """Tokenize and pack a text source into ``[n_windows, ctx_len]`` windows, BOS first.

    ``n_windows = ceil(n_tokens / ctx_len)``. When the source runs out first, the last
    window is padded and fewer windows are returned, with a warning. See
    :func:`text_documents` for the sources.
    """
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    tok = get_tokenizer(model)
    bos, pad = special_ids(model)
    n_windows = math.ceil(n_tokens / ctx_len)
    docs = text_documents(source, split=split, text_column=text_column,
                          dataset_config=dataset_config, seed=seed)

    def encoded() -> Iterator[list[int]]:
        while batch := list(itertools.islice(docs, batch_docs)):
            yield from tok(batch, add_special_tokens=False)["input_ids"]

    windows, n_real = pack(encoded(), ctx_len, bos, pad, n_windows)
    if len(windows) < n_windows:
        warnings.warn(f"text source {source!r} ran out after {n_real} tokens "
                      f"({len(windows)} of {n_windows} windows)", stacklevel=2)
    return windows


# --------------------------------------------------------------------------- concepts


def concept_token_ids(model: Any) -> dict[str, int]:
    """Token id of every concept word (with its leading space) under the model's tokenizer.

    Raises when a concept word is not one token: concept labels would be ambiguous.
    """
    tok = get_tokenizer(model)
    ids = {}
    for family in CONCEPTS.values():
        for words in family.values():
            for w in words:
                enc = tok(" " + w, add_special_tokens=False)["input_ids"]
                if len(enc) != 1:
                    raise ValueError(f"concept word {w!r} is {len(enc)} tokens {enc} under "
                                     "this tokenizer; concept labels need single tokens")
                ids[w] = enc[0]
    return ids


def concept_labels(tokens: torch.Tensor, model: Any, level: str = "family") -> torch.Tensor:
    """Which planted concept each token carries: an index into :data:`FAMILIES`
    (``level="family"``) or into :func:`concept_groups` (``level="group"``), -1 for none.
    """
    if level not in ("family", "group"):
        raise ValueError(f"level must be 'family' or 'group', got {level!r}")
    ids = concept_token_ids(model)
    groups = concept_groups()
    lut = torch.full((int(tokens.max()) + 1 if tokens.numel() else 1,), -1, dtype=torch.long)
    for f, (family, fgroups) in enumerate(CONCEPTS.items()):
        for group, words in fgroups.items():
            for w in words:
                if ids[w] < len(lut):
                    lut[ids[w]] = f if level == "family" else groups.index((family, group))
    return lut[tokens]


def concept_groups() -> list[tuple[str, str]]:
    """All ``(family, group)`` pairs, in a fixed order."""
    return [(f, g) for f, groups in CONCEPTS.items() for g in groups]
