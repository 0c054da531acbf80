"""Train the demo language model from its seed: tokenizer, transformer, model card.

    python train/train_demo_lm.py --out checkpoints/demo-lm [--recipe train/demo_lm.toml]

Writes ``tokenizer.json`` (byte-level BPE in which every concept word is one token),
``config.json`` + ``model.safetensors`` (a TransformerLens native checkpoint),
``train_log.jsonl`` and ``README.md`` (the model card, with the held-out loss against a
unigram baseline and the training cost, as measured by this run).

The loop is TransformerLens' own (``model(tokens, return_type="loss")``, Adam), written
out here rather than called through ``transformer_lens.train`` because that loop has
no learning-rate decay, no held-out evaluation and saves checkpoints with pickle.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from saekit import data  # noqa: E402
from saekit.models import boot_native, load_tokenizer  # noqa: E402


@dataclass
class DemoLMRecipe:
    seed: int = 0
    vocab_size: int = 4096
    tokenizer_docs: int = 20_000  # generated documents the tokenizer is trained on, with all prose
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    ctx_len: int = 128
    act_fn: str = "gelu_new"
    batch_size: int = 32
    steps: int = 3000
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    heldout_windows: int = 256
    threads: int = 2


def train_tokenizer(recipe: DemoLMRecipe, path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # add_prefix_space: a word at the start of a document gets the same token as mid-text.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=[data.DEFAULT_BOS, data.DEFAULT_PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    prose = [d for i, d in enumerate(data.prose_documents()) if not data.is_heldout(i)]
    gen = list(data.generated_documents(recipe.tokenizer_docs, seed=recipe.seed))
    tok.train_from_iterator(gen + prose, trainer=trainer)
    tmp = path.with_suffix(".tmp")
    tok.save(str(tmp))
    os.replace(tmp, path)


def unigram_loss(train: torch.Tensor, heldout: torch.Tensor, vocab: int) -> float:
    """Cross-entropy of held-out next tokens under add-one-smoothed training unigram counts."""
    counts = torch.bincount(train[:, 1:].flatten(), minlength=vocab).double() + 1
    logp = (counts / counts.sum()).log()
    return float(-logp[heldout[:, 1:].flatten()].mean())


@torch.no_grad()
def heldout_loss(model, windows: torch.Tensor, batch: int = 64) -> float:
    model.eval()
    losses = [float(model(windows[i:i + batch], return_type="loss")) * len(windows[i:i + batch])
              for i in range(0, len(windows), batch)]
    model.train()
    return sum(losses) / len(windows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="checkpoints/demo-lm")
    ap.add_argument("--recipe", default=None, help="TOML file with DemoLMRecipe fields")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    args = ap.parse_args()
    recipe = DemoLMRecipe()
    if args.recipe:
        fields = tomllib.loads(Path(args.recipe).read_text())
        unknown = set(fields) - {f.name for f in dataclasses.fields(DemoLMRecipe)}
        if unknown:
            raise SystemExit(f"{args.recipe}: unknown fields {sorted(unknown)}")
        recipe = dataclasses.replace(recipe, **fields)
    if args.steps:
        recipe = dataclasses.replace(recipe, steps=args.steps)
    torch.set_num_threads(recipe.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    train_tokenizer(recipe, out / "tokenizer.json")
    tok = load_tokenizer(out / "tokenizer.json")
    data.concept_token_ids(tok)  # every concept word must be one token
    n_train = recipe.steps * recipe.batch_size * recipe.ctx_len
    train = data.load_tokens("demo", tok, n_train, recipe.ctx_len, seed=recipe.seed)
    heldout = data.load_tokens("demo:heldout", tok, recipe.heldout_windows * recipe.ctx_len,
                               recipe.ctx_len, seed=recipe.seed)
    t_data = time.time() - t0
    print(f"tokenizer and {n_train:,} training tokens ready in {t_data:.0f}s", flush=True)

    cfg = {
        "architecture": "TransformerLensNative",
        "n_layers": recipe.n_layers, "d_model": recipe.d_model, "n_heads": recipe.n_heads,
        "d_head": recipe.d_model // recipe.n_heads, "d_mlp": 4 * recipe.d_model,
        "n_ctx": recipe.ctx_len, "d_vocab": len(tok), "act_fn": recipe.act_fn,
        "normalization_type": "LN", "positional_embedding_type": "standard",
        "seed": recipe.seed, "init_mode": "gpt2",
        "tokenizer": {"bos_token": data.DEFAULT_BOS, "eos_token": data.DEFAULT_BOS,
                      "pad_token": data.DEFAULT_PAD},
    }
    model = boot_native(cfg, tokenizer=tok, name="demo-lm")
    model.train()
    torch.manual_seed(recipe.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr,
                            betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return recipe.lr * (step + 1) / recipe.warmup_steps
        frac = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return recipe.lr * (recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))

    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(recipe.seed))
    log = open(out / "train_log.jsonl", "w")
    t1 = time.time()
    for step in range(recipe.steps):
        batch = train[order[step * recipe.batch_size:(step + 1) * recipe.batch_size]]
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(batch, return_type="loss")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == recipe.steps - 1:
            rec = {"step": step, "loss": loss.item(), "lr": lr_at(step),
                   "tokens": (step + 1) * batch.numel(), "seconds": round(time.time() - t1, 1)}
            if step % 500 == 0 or step == recipe.steps - 1:
                rec["heldout_loss"] = heldout_loss(model, heldout)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
    t_train = time.time() - t1
    model.eval()

    from safetensors.torch import save_file

    tmp = out / "model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    final = heldout_loss(model, heldout)
    uni = unigram_loss(train, heldout, len(tok))
    n_params = sum(p.numel() for p in model.parameters())
    summary = {
        "heldout_loss": round(final, 4), "unigram_heldout_loss": round(uni, 4),
        "train_tokens": n_train, "params": n_params, "train_seconds": round(t_train),
        "total_seconds": round(time.time() - t0), "threads": recipe.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "torch": torch.__version__,
        "recipe": dataclasses.asdict(recipe),
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_card(out, cfg, summary)
    print(json.dumps(summary, indent=2))


def write_card(out: Path, cfg: dict, s: dict) -> None:
    size = os.path.getsize(out / "model.safetensors") / 1e6
    r = s["recipe"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    curve = ", ".join(f"step {e['step']}: train {e['loss']:.2f} / held-out {e['heldout_loss']:.2f}"
                      for e in log if "heldout_loss" in e)
    card = f"""# demo-lm

A small causal transformer for trying saekit on a laptop CPU: {cfg['n_layers']} layers,
d_model {cfg['d_model']}, {cfg['n_heads']} heads of {cfg['d_head']}, d_mlp {cfg['d_mlp']}
(GELU), LayerNorm, learned positions, context {cfg['n_ctx']}, vocabulary {cfg['d_vocab']}.
{s['params']:,} parameters, stored as fp32 safetensors ({size:.1f} MB). A TransformerLens
native checkpoint: `saekit.load_model("checkpoints/demo-lm")`.

## Data
Half generated English with planted concepts (days, months, colours, numbers,
animals, cities, emotions, each split into groups with structure: weekday vs weekend,
seasons, warm vs cold colours, ...; `saekit/data.py`), half the Python interpreter's
own documentation (help topics and standard-library docstrings; snapshot in
`corpus/`, licence note beside it). Windows of {cfg['n_ctx']} tokens, each starting with
`<|endoftext|>`, which also separates documents. Every 20th prose document and a
differently seeded generated stream are held out.

## Tokenizer
Byte-level BPE (`tokenizers`), {cfg['d_vocab']} tokens, trained on {r['tokenizer_docs']:,}
generated documents and the training prose. Every concept word (with its leading
space) is a single token: `saekit.data.concept_labels(tokens, model)` says which.

## Training
{s['train_tokens']:,} tokens ({r['steps']} steps of {r['batch_size']}×{r['ctx_len']}), AdamW
(lr {r['lr']}, betas 0.9/0.95, weight decay {r['weight_decay']}), {r['warmup_steps']} warm-up
steps then cosine decay to {r['min_lr_ratio']}× lr, gradient clipping at {r['max_grad_norm']}, seed {r['seed']}.
Cost: {s['train_seconds'] / 60:.1f} minutes of training, {s['total_seconds'] / 60:.1f} minutes in
all, on {s['threads']} threads ({s['machine']}, torch {s['torch']}).

## Held-out loss
| model | cross-entropy (nats/token) |
|---|---|
| demo-lm | {s['heldout_loss']:.3f} |
| unigram baseline (add-one smoothed training counts) | {s['unigram_heldout_loss']:.3f} |

Measured on {r['heldout_windows']} held-out windows (`train_summary.json`). During training
(`train_log.jsonl`): {curve}. The prose half repeats many times over the run, so
training loss keeps falling after held-out loss has flattened.

## Rebuild
`make demo-lm` (or `python train/train_demo_lm.py --out DIR`) retrains from the seed.
On a given CPU training is deterministic: a rebuild on the machine type that trained
the committed model gave a byte-identical `model.safetensors` and `tokenizer.json`
(2 CPU cores, torch 2.13.0). Other hardware changes float rounding; the held-out
loss of a rebuild should stay within 2% of the table. `tests/test_demo_lm.py` checks
that the tokenizer still rebuilds exactly from the seed.
"""
    (out / "README.md").write_text(card)


if __name__ == "__main__":
    main()
