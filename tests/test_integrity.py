"""Weights from users and the hub load only as data, never as code.

Safetensors holds tensors only. The two pickle formats we accept (the official
`Wan2.2_VAE.pth`, and a wav2vec2 `pytorch_model.bin` when a repo has nothing else) go through
torch's `weights_only` unpickler, which refuses anything but tensors and containers. These
tests put a pickle that would create a marker file where those files go and check that it is
refused with a `ModelError` and the marker never appears; an audit of the package's source
checks that no other way of unpickling has crept in. (Download verification: test_hub.py.
The CLI's exit code 3 for such a file: test_bad_input.py, "model pickle with code".)
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2Model

from streamavatar_cli.audio import load_wav2vec2_model
from streamavatar_cli.errors import ModelError
from streamavatar_cli.models import load_vae
from streamavatar_cli.pipeline.model import load_model, random_tiny_model, save_model

PACKAGE = Path(__file__).resolve().parent.parent / "streamavatar_cli"


class Payload:
    """Unpickling this object calls `Path.touch(marker)`: harmless, but it is running code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def save_payload(file: Path, marker: Path, fmt: str) -> None:
    state = {"conv1.weight": torch.zeros(1), "conv1.bias": Payload(marker)}
    if fmt == "zip":  # what torch.save writes
        torch.save(state, file)
    else:  # a bare pickle, as old torch versions and other tools write
        with file.open("wb") as f:
            pickle.dump(state, f, protocol=4)


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    """The control: without weights_only the same file would have created the marker."""
    save_payload(tmp_path / "x.pth", tmp_path / "MARKER", "zip")
    torch.load(tmp_path / "x.pth", weights_only=False)
    assert (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("fmt", ["zip", "pickle"])
def test_a_vae_pth_holding_code_is_refused(tmp_path, fmt):
    folder = save_model(random_tiny_model(), tmp_path / "model")
    (folder / "vae.safetensors").unlink()
    save_payload(folder / "Wan2.2_VAE.pth", tmp_path / "MARKER", fmt)
    with pytest.raises(ModelError, match="Wan2.2_VAE.pth: refused to load.*could run code"):
        load_model(folder)
    with pytest.raises(ModelError, match="refused to load"):
        load_vae(folder / "Wan2.2_VAE.pth")
    assert not (tmp_path / "MARKER").exists()


def test_a_plain_vae_state_dict_pth_still_loads(tmp_path):
    model = random_tiny_model()
    folder = save_model(model, tmp_path / "model")
    (folder / "vae.safetensors").unlink()
    torch.save(model.vae.state_dict(), folder / "Wan2.2_VAE.pth")
    loaded = load_model(folder)
    assert torch.equal(loaded.vae.conv1.weight, model.vae.conv1.weight)


def test_a_wav2vec2_bin_holding_code_is_refused(tmp_path):
    from test_audio_features import tiny_config

    Wav2Vec2Model(tiny_config()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    save_payload(tmp_path / "pytorch_model.bin", tmp_path / "MARKER", "zip")
    with pytest.raises(ModelError, match="refused to load.*could run code"):
        load_wav2vec2_model(tmp_path)
    assert not (tmp_path / "MARKER").exists()


# ---- the audit --------------------------------------------------------------------------------

PICKLE_MODULES = {"pickle", "cPickle", "_pickle"}
PICKLE_LOADERS = {"load", "loads", "Unpickler"}
LOADER_MODULES = {"dill", "cloudpickle", "joblib", "shelve"}  # they exist to unpickle


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


def unsafe_loads(source: str) -> list[str]:
    """Every way the source could unpickle arbitrary objects, as "line N: what".

    Naming `pickle.UnpicklingError` (to explain a refusal) is fine; loading is not.
    """
    problems = []
    for node in ast.walk(ast.parse(source)):
        line = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            problems += [f"{line}: imports {a.name}" for a in node.names
                         if a.name.split(".")[0] in LOADER_MODULES]  # fmt: skip
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in LOADER_MODULES or (
                root in PICKLE_MODULES and {a.name for a in node.names} & PICKLE_LOADERS
            ):
                problems.append(f"{line}: imports from {node.module}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in PICKLE_MODULES and node.attr in PICKLE_LOADERS:
                problems.append(f"{line}: {node.value.id}.{node.attr}")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        what, owner = node.func.attr, ast.unparse(node.func.value)
        if what == "load" and owner == "torch" and _keyword(node, "weights_only") is not True:
            problems.append(f"{line}: torch.load without weights_only=True")
        if what == "load" and owner in ("np", "numpy") and _keyword(node, "allow_pickle"):
            problems.append(f"{line}: numpy load with allow_pickle")
        if what == "from_pretrained" and _keyword(node, "weights_only") is not True:
            problems.append(f"{line}: from_pretrained without weights_only=True")
        if what == "load" and owner == "torch.hub":
            problems.append(f"{line}: torch.hub.load runs the repo's code")
    return problems


def test_the_audit_finds_unsafe_loads():
    bad = (
        "import pickle\nimport joblib\nfrom pickle import loads\nimport torch\n"
        "pickle.load(f)\ntorch.load('x')\ntorch.load('x', weights_only=False)\n"
        "np.load('x', allow_pickle=True)\nM.from_pretrained('x')\ntorch.hub.load('a/b', 'm')\n"
    )
    assert len(unsafe_loads(bad)) == 8, unsafe_loads(bad)
    good = (
        "import pickle\nimport torch\nexcept_ = pickle.UnpicklingError\n"
        "torch.load('x', weights_only=True)\nM.from_pretrained('x', weights_only=True)\n"
    )
    assert unsafe_loads(good) == []


def test_no_module_of_the_package_can_unpickle_code():
    found = {
        str(file.relative_to(PACKAGE)): problems
        for file in sorted(PACKAGE.rglob("*.py"))
        if (problems := unsafe_loads(file.read_text(encoding="utf-8")))
    }
    assert found == {}
