# Every target sets up .venv itself on a fresh machine.
# torch is installed first, pinned: an unpinned torch pulls gigabytes of CUDA wheels.
PY      := .venv/bin/python
TORCH   := torch==2.13.0
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
PYTEST_ARGS ?=

.PHONY: demo test bench lint demo-lm clean-venv

.venv/.ready: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: .venv/.ready
	$(OFFLINE) .venv/bin/saekit demo

test: .venv/.ready
	$(OFFLINE) $(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

bench: .venv/.ready
	$(OFFLINE) $(PY) eval/bench_harvest.py --out eval/results/bench_harvest.json
	$(OFFLINE) $(PY) eval/bench_train.py --out eval/results/bench_train.json

lint: .venv/.ready
	$(PY) -m ruff check saekit tests train eval

# Rebuild the demo LM from its seed (about 30-60 minutes on 2 CPU cores).
demo-lm: .venv/.ready
	$(OFFLINE) $(PY) train/train_demo_lm.py --recipe train/demo_lm.toml --out checkpoints/demo-lm

clean-venv:
	rm -rf .venv
