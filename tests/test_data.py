"""Text sources, packing, BOS handling, masks and concept labels."""

import json

import pytest
import torch

import saekit
from saekit import data


def test_windows_start_with_bos(demo_model):
    toks = saekit.load_tokens("demo", demo_model, n_tokens=10 * 64, ctx_len=64)
    bos, pad = data.special_ids(demo_model)
    assert toks.shape == (10, 64) and toks.dtype == torch.long
    assert (toks[:, 0] == bos).all()
    assert not (toks == pad).any()


def test_packing_joins_documents_with_separator_and_pads_the_tail():
    windows, n_real = data.pack([[5, 6, 7], [8, 9], [10]], ctx_len=4, bos=0, pad=1, n_windows=10)
    # stream: 5 6 7 | 0 8 9 | 0 10  ->  [0 5 6 7] [0 0 8 9] [0 0 10 pad]
    assert windows.tolist() == [[0, 5, 6, 7], [0, 0, 8, 9], [0, 0, 10, 1]]
    assert n_real == 11


def test_exhausted_source_warns_and_pads(demo_model, tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("On Monday Anna went to work early.")
    with pytest.warns(UserWarning, match="ran out"):
        toks = saekit.load_tokens(f, demo_model, n_tokens=1000, ctx_len=32)
    assert toks.shape[0] == 1
    mask = saekit.token_mask(toks, demo_model)
    _, pad = data.special_ids(demo_model)
    assert not mask[0, 0] and not mask[toks == pad].any() and mask.sum() > 5


def test_token_mask_drops_bos_separators_and_padding(demo_model):
    bos, pad = data.special_ids(demo_model)
    toks = torch.tensor([[bos, 11, 12, bos, 13, pad, pad]])
    assert saekit.token_mask(toks, demo_model).tolist() == [[False, True, True, False, True, False, False]]


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet", "folder", "dataset-dir"])
def test_local_sources(demo_model, tmp_path, kind):
    texts = [f"Document {i}: the red fox ran to Paris on Monday." for i in range(20)]
    if kind == "txt":
        src = tmp_path / "a.txt"
        src.write_text("\n".join(texts))
    elif kind == "jsonl":
        src = tmp_path / "a.jsonl"
        src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        src = tmp_path / "a.parquet"
        pq.write_table(pa.table({"text": texts}), src)
    elif kind == "folder":
        src = tmp_path / "docs"
        src.mkdir()
        for i, t in enumerate(texts):
            (src / f"{i:02d}.txt").write_text(t)
    else:  # a dataset repository layout, read by `datasets` as if from the hub
        import pyarrow as pa
        import pyarrow.parquet as pq

        src = tmp_path / "repo"
        (src / "data").mkdir(parents=True)
        pq.write_table(pa.table({"text": texts}), src / "data" / "train-00000-of-00001.parquet")
    toks = saekit.load_tokens(src, demo_model, n_tokens=4 * 32, ctx_len=32)
    assert toks.shape == (4, 32)
    decoded = demo_model.tokenizer.decode(toks[0, 1:])
    assert "Document 0" in decoded and "Paris" in decoded


def test_missing_column_is_named(demo_model, tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text(json.dumps({"body": "hello"}) + "\n")
    with pytest.raises(KeyError, match="'text'"):
        saekit.load_tokens(src, demo_model, n_tokens=64)


def test_missing_local_path(demo_model):
    with pytest.raises(FileNotFoundError):
        saekit.load_tokens("./nope.txt", demo_model, n_tokens=64)


def test_unknown_hub_dataset_offline_is_a_clear_error(demo_model):
    with pytest.raises(RuntimeError, match="could not open dataset"):
        saekit.load_tokens("no-such-user/no-such-dataset-xyz", demo_model, n_tokens=64)


def test_generated_corpus_is_deterministic():
    a = list(data.generated_documents(5, seed=1))
    assert a == list(data.generated_documents(5, seed=1))
    assert a != list(data.generated_documents(5, seed=2))


def test_concept_words_are_single_tokens_and_labelled(demo_model):
    ids = data.concept_token_ids(demo_model)
    assert len(ids) == sum(len(w) for g in data.CONCEPTS.values() for w in g.values())
    assert len(set(ids.values())) == len(ids)
    toks = demo_model.tokenizer(" On Saturday the blue fox ran to Tokyo", return_tensors="pt")["input_ids"]
    fam = saekit.concept_labels(toks, demo_model)
    words = [demo_model.tokenizer.decode(t).strip() for t in toks[0]]
    got = {w: data.FAMILIES[f] for w, f in zip(words, fam[0].tolist(), strict=True) if f >= 0}
    assert got == {"Saturday": "day", "blue": "colour", "fox": "animal", "Tokyo": "city"}
    grp = saekit.concept_labels(toks, demo_model, level="group")
    groups = {words[i]: data.concept_groups()[g] for i, g in enumerate(grp[0].tolist()) if g >= 0}
    assert groups["Saturday"] == ("day", "weekend") and groups["blue"] == ("colour", "cold")


def test_heldout_prose_is_disjoint_from_training_prose():
    docs = data.prose_documents()
    held = {d for i, d in enumerate(docs) if data.is_heldout(i)}
    train = {d for i, d in enumerate(docs) if not data.is_heldout(i)}
    assert held and train and not held & train


def _tokenizer(specials: list[str], bos: str | None, eos: str | None, prepend: str | None):
    """A word-level fast tokenizer with a family's special tokens, prepending ``prepend``
    as Llama 3 and Gemma tokenizers prepend their BOS (GPT-2 and SmolLM2 prepend none)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*specials, "a", "b", "[UNK]"])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    if prepend:
        raw.post_processor = processors.TemplateProcessing(
            single=f"{prepend} $A", special_tokens=[(prepend, vocab[prepend])])
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=bos, eos_token=eos, unk_token="[UNK]")


@pytest.mark.parametrize("family, specials, bos, eos, prepend, want", [
    ("llama-3", ["<|begin_of_text|>", "<|end_of_text|>"], "<|begin_of_text|>", "<|end_of_text|>",
     "<|begin_of_text|>", "<|begin_of_text|>"),
    ("gemma", ["<pad>", "<eos>", "<bos>"], "<bos>", "<eos>", "<bos>", "<bos>"),
    ("gpt-2", ["<|endoftext|>"], "<|endoftext|>", "<|endoftext|>", None, "<|endoftext|>"),
    ("smollm2-instruct", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "<|im_start|>", "<|im_end|>",
     None, "<|endoftext|>"),
    ("llama-3-instruct without BOS", ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], "<|begin_of_text|>",
     "<|eot_id|>", None, "<|end_of_text|>"),
    ("no separator", ["<s>", "<e>"], "<s>", "<e>", None, "<s>"),
])
def test_document_start_rule(family, specials, bos, eos, prepend, want):
    tok = _tokenizer(specials, bos, eos, prepend)
    start, rule = data.document_start(tok)
    assert tok.convert_ids_to_tokens(start) == want, (family, rule)
    assert data.special_ids(tok)[0] == start
    windows = data.load_tokens(["a b a", "b b"], tok, 8, ctx_len=4)
    assert (windows[:, 0] == start).all() and (windows == start).sum() == 3  # two window starts, one separator


def test_english_corpus_splits_are_disjoint_and_large():
    train = list(data.english_documents("train"))
    heldout = list(data.english_documents("heldout"))
    assert not set(train) & set(heldout)
    assert sum(map(len, train)) > 4_000_000 and sum(map(len, heldout)) > 400_000  # ~4.5 chars per token
    assert list(data.english_documents("heldout", seed=1)) != heldout  # shuffled by seed
    assert sorted(data.english_documents("heldout", seed=1)) == sorted(heldout)
    with pytest.raises(ValueError, match="split"):
        next(data.english_documents("validation"))
