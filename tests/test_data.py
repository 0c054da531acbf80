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
