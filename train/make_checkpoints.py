"""Regenerate the demo dictionaries shipped in checkpoints/ (``make checkpoints``).

A TopK SAE and an SNMF on the demo LM's ``blocks.2.mlp.hook_post``, each under 5 MB,
each recording the sha256 of the demo-LM weights it was fitted on
(``cfg.metadata["model_sha256"]``; ``tests/test_checkpoints.py`` checks that it still
matches). With them, evaluators and auto-interp run on a fresh clone without training.

    python train/make_checkpoints.py [--out checkpoints] [--n-tokens 131072]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import saekit

ROOT = Path(__file__).resolve().parent.parent
DEMO_LM = ROOT / "checkpoints" / "demo-lm"
HOOK = "blocks.2.mlp.hook_post"


def weights_sha256(model_dir: Path) -> str:
    h = hashlib.sha256()
    with open(model_dir / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "checkpoints")
    ap.add_argument("--n-tokens", type=int, default=128 * 1024, help="training tokens (the demo split)")
    args = ap.parse_args()
    model = saekit.load_model(DEMO_LM, device="cpu")
    sha = weights_sha256(DEMO_LM)
    tokens = saekit.load_tokens("demo", model, args.n_tokens, seed=1)
    acts = saekit.harvest(model, [HOOK], tokens, batch_size=32, progress=True)[HOOK]
    print(f"{len(acts):,} tokens of {HOOK}")
    # 1024 features x 512 neurons x (W_enc + W_dec) in float32 is 4.2 MB: the size limit.
    t = time.time()
    sae = saekit.fit(acts, "topk", d_dict=1024, k=16, batch_size=1024, epochs=3, seed=0, hook=HOOK,
                     model=model, progress=True)
    print(f"topk: {time.time() - t:.0f}s")
    t = time.time()
    snmf = saekit.fit(acts[: args.n_tokens // 2], "snmf", d_dict=128, k=16, seed=0, hook=HOOK, model=model,
                      progress=True, wta_fraction=0.05, max_iter=40)
    print(f"snmf: {time.time() - t:.0f}s, rel. error {snmf.cfg.metadata['rel_error']:.3f}")
    for name, d in (("demo-topk", sae), ("demo-snmf", snmf)):
        d.cfg.metadata["model_sha256"] = sha
        d.cfg.metadata["recipe"] = "train/make_checkpoints.py"
        path = d.save(args.out / name)
        size = sum(f.stat().st_size for f in path.iterdir())
        print(f"wrote {path} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
