"""How token windows start and which tokens count: a model's document-start token,
padding, and the mask that keeps BOS, separators and padding out of every statistic.

:func:`document_start` chooses the token each window (and document) starts with, by
the rule its docstring gives; :func:`text_convention` is what saekit records about that
choice in cache manifests and dictionary configs; :func:`token_mask` is False wherever
no activation statistic should look. :mod:`saekit.data` packs text with them (and
re-exports them, so ``saekit.data.token_mask`` keeps working).
"""

from __future__ import annotations

from typing import Any

import torch


def get_tokenizer(model_or_tokenizer: Any) -> Any:
    """The Hugging Face tokenizer of a model (its ``.tokenizer``), or the argument itself."""
    tok = getattr(model_or_tokenizer, "tokenizer", None) or model_or_tokenizer
    if not callable(tok) or not hasattr(tok, "convert_ids_to_tokens"):
        raise TypeError(
            f"expected a model with a Hugging Face tokenizer or a tokenizer, got {type(tok).__name__}"
        )
    return tok


#: Document separators of tokenizers that do not prepend a BOS, in order of preference:
#: GPT-2, GPT-NeoX/Pythia, SmolLM/StarCoder and Qwen use ``<|endoftext|>``; Llama 3's
#: base vocabulary has ``<|end_of_text|>``; SentencePiece models ``</s>``.
DOCUMENT_SEPARATORS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


def document_start(model_or_tokenizer: Any) -> tuple[int, str]:
    """The token a document starts with for this model, and the rule that chose it.

    Windows must begin the way the model saw documents begin in pre-training, not with
    whatever the tokenizer calls its BOS: SmolLM2-Instruct's tokenizer names the chat
    token ``<|im_start|>`` as BOS, but its pre-training documents were joined by
    ``<|endoftext|>``. Measured on 64 × 128 held-out English tokens: next-token CE
    3.286 nats with windows and documents led by ``<|endoftext|>``, 3.328 by
    ``<|im_start|>`` (paired difference 0.042 ± 0.012).
    The rule:

    1. A tokenizer that prepends a BOS when it encodes text (Llama 2/3, Gemma, Mistral,
       the demo LM) was trained with that BOS at every document start: use it.
    2. Otherwise documents were packed with an end-of-text separator between them
       (GPT-2, Pythia, SmolLM, Qwen): use the first of :data:`DOCUMENT_SEPARATORS` in the
       vocabulary.
    3. Otherwise the BOS, else the EOS token.

    TransformerLens switches BOS-prepending on in the tokenizer it attaches to a model,
    so :func:`~saekit.models.load_model` applies the rule to the tokenizer as shipped and
    records the answer on the model (``saekit_document_start``), which wins here.
    """
    recorded = getattr(model_or_tokenizer, "saekit_document_start", None)
    if recorded is not None:
        return recorded
    tok = get_tokenizer(model_or_tokenizer)
    cached = getattr(tok, "_saekit_document_start", None)
    if cached is not None:
        return cached
    bos = tok.bos_token_id
    result: tuple[int, str] | None = None
    if bos is not None:
        try:
            ids = tok("a")["input_ids"]
        except Exception:  # a tokenizer that cannot encode without more set-up: skip rule 1
            ids = []
        if ids and ids[0] == bos:
            result = int(bos), "bos: the tokenizer prepends it to every text"
    if result is None:
        vocab = tok.get_vocab()
        sep = next((t for t in DOCUMENT_SEPARATORS if t in vocab), None)
        if sep is not None:
            result = int(vocab[sep]), f"separator: {sep} joins documents (the tokenizer adds no BOS)"
    if result is None:
        fallback = bos if bos is not None else tok.eos_token_id
        if fallback is None:
            raise ValueError(f"tokenizer {type(tok).__name__} has no BOS, EOS or end-of-text token; "
                             "saekit needs one to start each window")
        result = int(fallback), "fallback: the tokenizer's " + ("BOS" if bos is not None else "EOS")
    try:
        tok._saekit_document_start = result
    except AttributeError:
        pass
    return result


def text_convention(model_or_tokenizer: Any) -> dict[str, Any]:
    """What saekit records in caches and dictionary configs about how windows start."""
    tok = get_tokenizer(model_or_tokenizer)
    i, rule = document_start(model_or_tokenizer)
    return {"document_start": tok.convert_ids_to_tokens(i), "document_start_id": i, "rule": rule}


def special_ids(model_or_tokenizer: Any) -> tuple[int, int]:
    """``(document start, pad)``: the token every window and document starts with (see
    :func:`document_start`), and padding (the tokenizer's, else the document start)."""
    tok = get_tokenizer(model_or_tokenizer)
    start, _ = document_start(model_or_tokenizer)
    pad = tok.pad_token_id if tok.pad_token_id is not None else start
    return int(start), int(pad)


def token_mask(tokens: torch.Tensor, model: Any) -> torch.Tensor:
    """Bool tensor shaped like ``tokens``: False at BOS, EOS, separators and padding.

    Position 0 is always masked (it is BOS by construction, and for models without a
    BOS token it is still the attention sink whose activations are outliers).
    """
    tok = get_tokenizer(model)
    start, pad = special_ids(model)
    drop = {start, pad} | {int(i) for i in (tok.bos_token_id, tok.eos_token_id) if i is not None}
    mask = torch.ones_like(tokens, dtype=torch.bool)
    for i in drop:
        mask &= tokens != i
    mask[..., 0] = False
    return mask


def token_strings(model_or_tokenizer: Any) -> list[str]:
    """Every token id decoded on its own (``decode([i])``), indexable by id."""
    tok = get_tokenizer(model_or_tokenizer)
    n = max(len(tok), max(tok.get_vocab().values()) + 1)
    return [tok.decode([i]) for i in range(n)]
