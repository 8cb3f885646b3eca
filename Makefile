# Two commands work on a fresh machine: `make demo` and `make test`.
# GPU users: `make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`
# or install torch into .venv yourself first (an installed torch that satisfies the spec is kept).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: demo test test-slow bench lint clean venv train-tiny train-tiny-distill train-tiny-ablation

# Marker files: re-install only when pyproject.toml changes.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install -q $(TORCH_SPEC)
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -q -e '.[test,dev,bench]'
	@touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	@mkdir -p out
	$(BIN)/streamavatar render --image examples/puppet.png \
		--agent-audio examples/conversation-agent.wav --user-audio examples/conversation-user.wav \
		--overwrite -o out/demo.mp4
	@echo "Demo video: $(CURDIR)/out/demo.mp4"

# The bundled model from nothing, with the project's own commands (weights/streamavatar-tiny/
# README.md has the wall times). Every stage resumes, so rerunning after an interruption
# continues where it stopped. Checkpoints, caches and logs go to runs/tiny/ (git-ignored).
TRAIN := $(BIN)/streamavatar train
train-tiny: $(VENV)/.installed
	@command -v espeak-ng >/dev/null || echo "note: espeak-ng is not installed, so the clips speak synthetic syllables only and the weights will differ from the committed ones (apt install espeak-ng)" >&2
	$(TRAIN) vae --config configs/tiny-vae.toml --out runs/tiny/vae --resume
	$(TRAIN) vae --config configs/tiny-vae-more.toml --out runs/tiny/vae-more --resume
	$(TRAIN) vae --config configs/tiny-vae-more2.toml --out runs/tiny/vae-more2 --resume
	$(TRAIN) teacher --config configs/tiny-teacher.toml --out runs/tiny/teacher --resume
	$(TRAIN) teacher --config configs/tiny-teacher-mouth.toml --out runs/tiny/teacher-mouth --resume
	$(TRAIN) teacher --config configs/tiny-teacher-nods.toml --out runs/tiny/teacher-nods --resume
	$(TRAIN) ode-pairs --config configs/tiny-ode-pairs.toml --out runs/tiny/ode-pairs
	$(TRAIN) ode-init --config configs/tiny-ode-init.toml --out runs/tiny/ode-init --resume
	$(PY) benchmarks/tiny_model.py export --from runs/tiny/ode-init --to runs/tiny/student
	$(TRAIN) refine --config configs/tiny-refine.toml --out runs/tiny/refine --resume
	$(TRAIN) vae --config configs/tiny-vae-decoder.toml --out runs/tiny/vae-decoder --resume
	$(PY) benchmarks/tiny_model.py export --from runs/tiny/refine --vae runs/tiny/vae-decoder --to weights/streamavatar-tiny

# SiD distillation of the ODE-initialised student (not yet part of the bundled model: see its
# model card); writes runs/tiny/distill, a student folder `render --model` takes.
train-tiny-distill: $(VENV)/.installed
	$(TRAIN) distill --config configs/tiny-distill.toml --out runs/tiny/distill --resume

# The ablation's trained variants (issue 14): the ODE-init student without RAPR and without the
# sink, same budget as the default; `benchmarks/ablation.py` scores them when they exist.
train-tiny-ablation: $(VENV)/.installed
	$(TRAIN) ode-init --config configs/tiny-ode-init-no-rapr.toml --out runs/tiny/ode-init-no-rapr --resume
	$(TRAIN) ode-init --config configs/tiny-ode-init-no-sink.toml --out runs/tiny/ode-init-no-sink --resume

test: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-slow: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m slow

bench: $(VENV)/.installed-test
	$(BIN)/streamavatar bench

lint: $(VENV)/.installed-test
	$(BIN)/ruff check streamavatar_cli tests

clean:
	rm -rf out build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
