"""Shared fixtures. The whole suite runs offline: nothing may reach a model hub."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from streamavatar_cli.config import MODEL_PRESETS, DiTConfig, ModelConfig, VAEConfig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def tiny_model_bench():
    """benchmarks/tiny_model.py (the bundled model's export and evaluation) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "tiny_model", REPO / "benchmarks" / "tiny_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture
def tiny_dit_config() -> DiTConfig:
    return DiTConfig.preset("tiny")


@pytest.fixture
def tiny_vae_config() -> VAEConfig:
    return VAEConfig.preset("tiny")


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    return MODEL_PRESETS["tiny"]
