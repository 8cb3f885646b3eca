"""Registry, download from a fake hub cache, verification, model lookup and the CLI around them.

No test touches the network: downloads read a hub cache built in tmp_path in the real
huggingface_hub layout, and the online path runs against a patched `HfApi.model_info`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx2
import huggingface_hub
import pytest
import torch
from huggingface_hub import errors as hf_errors
from safetensors.torch import save_file
from typer.testing import CliRunner

from streamavatar_cli import hub
from streamavatar_cli.cli import app
from streamavatar_cli.config import MODEL_PRESETS
from streamavatar_cli.errors import DownloadError, InputError, ModelError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
WAN_INDEX = "diffusion_pytorch_model.safetensors.index.json"
SHARDS = [f"diffusion_pytorch_model-0000{i}-of-00002.safetensors" for i in (1, 2)]


# --------------------------------------------------------------------------------------
# Builders: small real files in the layouts the hub serves


def write_safetensors(path: Path, keys: tuple[str, ...] = ("w",)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.randn(4, 4) for k in keys}, str(path))


def write_pth(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"encoder.conv1.weight": torch.randn(4, 3, 3)}, path)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_wan_official(root: Path) -> None:
    write_json(root / "config.json", {"_class_name": "WanModel", "model_type": "ti2v", "dim": 8})
    write_safetensors(root / SHARDS[0], ("blocks.0.a",))
    write_safetensors(root / SHARDS[1], ("blocks.1.a",))
    write_json(root / WAN_INDEX, {"weight_map": {"blocks.0.a": SHARDS[0], "blocks.1.a": SHARDS[1]}})
    write_pth(root / "Wan2.2_VAE.pth")
    (root / "README.md").write_text("not downloaded: outside the allow patterns")


def write_wav2vec2(root: Path, weights: tuple[str, ...] = ("model.safetensors",)) -> None:
    write_json(root / "config.json", {"model_type": "wav2vec2"})
    write_json(root / "preprocessor_config.json", {"sampling_rate": 16000})
    for name in weights:
        if name.endswith(".safetensors"):
            write_safetensors(root / name)
        else:
            write_pth(root / name)


def write_streamavatar(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    MODEL_PRESETS["tiny"].save(root / "config.json")
    write_safetensors(root / "dit.safetensors")
    write_safetensors(root / "vae.safetensors")


def fake_cache(cache: Path, repo_id: str, build) -> Path:
    """A hub cache entry: models--org--name/{refs/main, snapshots/<commit>/...}; the snapshot."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / COMMIT
    build(snapshot)
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(COMMIT)  # no newline, as the hub writes it
    return snapshot


@pytest.fixture
def lenient_wan(monkeypatch):
    """The wan2.2 entry without its size floors, so tiny stand-in files verify."""
    entry = dataclasses.replace(hub.REGISTRY["wan2.2-ti2v-5b"], min_bytes={})
    monkeypatch.setitem(hub.REGISTRY, entry.name, entry)
    return entry


# --------------------------------------------------------------------------------------
# Download from the cache (local files only / HF_HUB_OFFLINE)


def test_download_copies_allowed_files_from_cache_and_verifies(tmp_path, lenient_wan):
    snapshot = fake_cache(tmp_path / "cache", "Wan-AI/Wan2.2-TI2V-5B", write_wan_official)
    out = hub.download(
        "wan2.2-ti2v-5b",
        dest_dir=tmp_path / "weights",
        local_files_only=True,
        cache_dir=tmp_path / "cache",
    )
    assert out == tmp_path / "weights" / "wan2.2-ti2v-5b"
    expected = sorted(["config.json", WAN_INDEX, *SHARDS, "Wan2.2_VAE.pth"])
    assert sorted(p.name for p in out.iterdir()) == expected
    assert (out / SHARDS[1]).read_bytes() == (snapshot / SHARDS[1]).read_bytes()
    # Running again over the same folder is a no-op that still verifies.
    hub.download(
        "Wan-AI/Wan2.2-TI2V-5B", dest_dir=tmp_path / "weights", cache_dir=tmp_path / "cache"
    )


def test_offline_env_alone_reads_the_cache(tmp_path, monkeypatch):
    assert hub.hub_offline()  # conftest sets HF_HUB_OFFLINE=1
    fake_cache(tmp_path / "cache", "facebook/wav2vec2-base-960h", write_wav2vec2)
    out = hub.download("wav2vec2-base-960h", dest_dir=tmp_path / "w", cache_dir=tmp_path / "cache")
    assert (out / "model.safetensors").is_file()


def test_cache_path_uses_hf_hub_cache_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    fake_cache(tmp_path / "cache", "facebook/wav2vec2-base-960h", write_wav2vec2)
    out = hub.download("wav2vec2-base-960h", dest_dir=tmp_path / "w", local_files_only=True)
    assert (out / "config.json").is_file()


@pytest.mark.parametrize(
    ("cached", "expected"),
    [
        (("model.safetensors", "pytorch_model.bin"), "model.safetensors"),
        (("pytorch_model.bin",), "pytorch_model.bin"),
    ],
)
def test_safetensors_weights_preferred_over_pickle(tmp_path, cached, expected):
    fake_cache(
        tmp_path / "cache", "facebook/wav2vec2-base-960h", lambda r: write_wav2vec2(r, cached)
    )
    out = hub.download("wav2vec2-base-960h", dest_dir=tmp_path / "w", cache_dir=tmp_path / "cache")
    weights = sorted(p.name for p in out.iterdir() if p.suffix in (".bin", ".safetensors"))
    assert weights == [expected]


def test_truncated_safetensors_is_named(tmp_path, lenient_wan):
    snapshot = fake_cache(tmp_path / "cache", "Wan-AI/Wan2.2-TI2V-5B", write_wan_official)
    data = (snapshot / SHARDS[1]).read_bytes()
    (snapshot / SHARDS[1]).write_bytes(data[: len(data) // 2])
    with pytest.raises(DownloadError, match=SHARDS[1]) as info:
        hub.download("wan2.2-ti2v-5b", dest_dir=tmp_path / "w", cache_dir=tmp_path / "cache")
    assert "--force" in str(info.value)


def test_missing_required_file_is_named(tmp_path, lenient_wan):
    snapshot = fake_cache(tmp_path / "cache", "Wan-AI/Wan2.2-TI2V-5B", write_wan_official)
    (snapshot / "Wan2.2_VAE.pth").unlink()
    with pytest.raises(DownloadError, match="missing Wan2.2_VAE.pth"):
        hub.download("wan2.2-ti2v-5b", dest_dir=tmp_path / "w", cache_dir=tmp_path / "cache")


def test_index_listing_an_absent_shard_fails(tmp_path, lenient_wan):
    snapshot = fake_cache(tmp_path / "cache", "Wan-AI/Wan2.2-TI2V-5B", write_wan_official)
    weight_map = {"a": SHARDS[0], "b": SHARDS[1], "c": "diffusion_pytorch_model-3.safetensors"}
    write_json(snapshot / WAN_INDEX, {"weight_map": weight_map})
    with pytest.raises(DownloadError, match="diffusion_pytorch_model-3.safetensors"):
        hub.download("wan2.2-ti2v-5b", dest_dir=tmp_path / "w", cache_dir=tmp_path / "cache")


def test_size_floor_rejects_a_tiny_wan_vae(tmp_path):
    fake_cache(tmp_path / "cache", "Wan-AI/Wan2.2-TI2V-5B", write_wan_official)
    with pytest.raises(DownloadError, match=r"Wan2.2_VAE.pth: \d+ bytes, a complete file"):
        hub.download("wan2.2-ti2v-5b", dest_dir=tmp_path / "w", cache_dir=tmp_path / "cache")


def test_text_encoder_files_are_required_when_asked(tmp_path, lenient_wan):
    fake_cache(tmp_path / "cache", "Wan-AI/Wan2.2-TI2V-5B", write_wan_official)
    with pytest.raises(DownloadError, match="models_t5_umt5-xxl-enc-bf16.pth"):
        hub.download(
            "wan2.2-ti2v-5b",
            dest_dir=tmp_path / "w",
            cache_dir=tmp_path / "cache",
            with_text_encoder=True,
        )
    with pytest.raises(InputError, match="no text encoder"):
        hub.download("wav2vec2-base-960h", with_text_encoder=True)


def test_not_in_cache_while_offline_fails_with_advice(tmp_path):
    with pytest.raises(DownloadError) as info:
        hub.download("wav2vec2-base-960h", dest_dir=tmp_path / "w", cache_dir=tmp_path / "empty")
    message = str(info.value)
    assert "not in the hub cache" in message and "HF_HUB_OFFLINE" in message
    assert "--model" in message and "\n" not in message


def test_existing_complete_folder_verifies_without_cache(tmp_path):
    write_wav2vec2(tmp_path / "w" / "wav2vec2-base-960h")
    out = hub.download("wav2vec2-base-960h", dest_dir=tmp_path / "w", cache_dir=tmp_path / "empty")
    assert out == tmp_path / "w" / "wav2vec2-base-960h"


def test_streamavatar_repo_is_downloaded_and_its_config_checked(tmp_path):
    snapshot = fake_cache(tmp_path / "cache", "someone/avatar-small", write_streamavatar)
    out = hub.download(
        "someone/avatar-small", dest_dir=tmp_path / "w", cache_dir=tmp_path / "cache"
    )
    assert out.name == "avatar-small"
    assert {"config.json", "dit.safetensors", "vae.safetensors"} <= {p.name for p in out.iterdir()}
    write_json(snapshot / "config.json", {"format": "streamavatar", "format_version": 1})
    with pytest.raises(DownloadError, match="config.json.*download someone/avatar-small --force"):
        hub.download("someone/avatar-small", dest_dir=tmp_path / "w", cache_dir=tmp_path / "cache")


def test_unknown_name_is_an_input_error():
    with pytest.raises(InputError, match="wan2.2-ti2v-5b"):
        hub.entry_for("not-a-model")
    with pytest.raises(InputError, match="bundled"):
        hub.entry_for(hub.DEFAULT_MODEL)
    assert hub.entry_for("wan-ai/wan2.2-ti2v-5b-diffusers").name == "wan2.2-ti2v-5b-diffusers"


# --------------------------------------------------------------------------------------
# verify_download on hand-made folders


def _wav2vec2_with_bin(tmp_path: Path, content: bytes) -> Path:
    folder = tmp_path / "wav2vec2-base-960h"
    write_wav2vec2(folder, weights=())
    (folder / "pytorch_model.bin").write_bytes(content)
    return folder


def _torch_bytes(tmp_path: Path, **kwargs) -> bytes:
    torch.save({"w": torch.randn(64)}, tmp_path / "t.pth", **kwargs)
    return (tmp_path / "t.pth").read_bytes()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("truncated zip", "truncated"),
        ("lfs pointer", "only"),
        ("html page", "not a torch checkpoint"),
        ("empty", "empty"),
    ],
)
def test_bad_torch_files_are_rejected(tmp_path, kind, reason):
    good = _torch_bytes(tmp_path)
    content = {
        "truncated zip": good[: len(good) - 30],
        "lfs pointer": b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n",
        "html page": b"<!DOCTYPE html>" + b" " * 400,
        "empty": b"",
    }[kind]
    folder = _wav2vec2_with_bin(tmp_path, content)
    with pytest.raises(DownloadError, match=f"pytorch_model.bin: .*{reason}"):
        hub.verify_download(folder, hub.REGISTRY["wav2vec2-base-960h"])


@pytest.mark.parametrize("zip_format", [True, False])
def test_good_torch_files_pass(tmp_path, zip_format):
    content = _torch_bytes(tmp_path, _use_new_zipfile_serialization=zip_format)
    folder = _wav2vec2_with_bin(tmp_path, content)
    hub.verify_download(folder, hub.REGISTRY["wav2vec2-base-960h"])


def test_sha256_from_the_registry_is_checked(tmp_path):
    folder = tmp_path / "wav2vec2-base-960h"
    write_wav2vec2(folder)
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    entry = hub.REGISTRY["wav2vec2-base-960h"]
    hub.verify_download(folder, dataclasses.replace(entry, sha256={"model.safetensors": digest}))
    wrong = dataclasses.replace(entry, sha256={"model.safetensors": "0" * 64})
    with pytest.raises(DownloadError, match="model.safetensors: sha256"):
        hub.verify_download(folder, wrong)


# --------------------------------------------------------------------------------------
# The online path, with the hub replaced


def _http_error(cls, status: int):
    request = httpx2.Request("GET", "https://huggingface.co/api/models/org/x")
    return cls("hub said no", response=httpx2.Response(status, request=request))


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr(hub, "hub_offline", lambda: False)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_http_error(hf_errors.GatedRepoError, 403), "gated.*HF_TOKEN"),
        (_http_error(hf_errors.RepositoryNotFoundError, 404), "not found on the hub"),
        (_http_error(hf_errors.RevisionNotFoundError, 404), "revision 'v9' does not exist"),
        (_http_error(hf_errors.HfHubHTTPError, 401), "HTTP 401.*HF_TOKEN"),
        (_http_error(hf_errors.HfHubHTTPError, 503), "HTTP 503.*later"),
        (httpx2.ConnectError("Name or service not known"), "cannot reach.*--local-files-only"),
        (httpx2.ReadTimeout("timed out"), "cannot reach.*check the network"),
    ],
)
def test_hub_errors_become_one_line(tmp_path, monkeypatch, online, error, expected):
    def model_info(self, repo_id, **kwargs):
        assert kwargs["timeout"] == hub.HUB_TIMEOUT_S
        raise error

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    with pytest.raises(DownloadError, match=expected) as info:
        hub.download("someone/avatar", dest_dir=tmp_path, revision="v9", progress=False)
    assert "\n" not in str(info.value)


def test_online_download_selects_files_and_pins_the_commit(tmp_path, monkeypatch, online):
    listing = [
        "config.json",
        "preprocessor_config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "tf_model.h5",
        "README.md",
    ]
    calls = []

    def model_info(self, repo_id, revision=None, timeout=None):
        return SimpleNamespace(sha=COMMIT, siblings=[SimpleNamespace(rfilename=f) for f in listing])

    def snapshot_download(repo_id, **kwargs):
        calls.append(kwargs)
        write_wav2vec2(Path(kwargs["local_dir"]))
        return str(kwargs["local_dir"])

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    out = hub.download("wav2vec2-base-960h", dest_dir=tmp_path, progress=False, force=True)
    assert out == tmp_path / "wav2vec2-base-960h"
    (call,) = calls
    assert call["allow_patterns"] == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    assert call["revision"] == COMMIT and call["force_download"] is True
    assert call["local_dir"] == out and call["etag_timeout"] == hub.HUB_TIMEOUT_S


def test_online_repo_without_checkpoint_files_fails_before_downloading(
    tmp_path, monkeypatch, online
):
    def model_info(self, repo_id, revision=None, timeout=None):
        return SimpleNamespace(sha=COMMIT, siblings=[SimpleNamespace(rfilename="README.md")])

    def snapshot_download(*args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(DownloadError, match="has no config.json.*not a StreamAvatar checkpoint"):
        hub.download("someone/other-model", dest_dir=tmp_path, progress=False)


# --------------------------------------------------------------------------------------
# Finding model folders


@pytest.fixture
def search_dirs(tmp_path, monkeypatch):
    """Three empty search locations: $STREAMAVATAR_WEIGHTS, ./weights, the checkout's."""
    dirs = {k: tmp_path / k / "weights" for k in ("env", "cwd", "checkout")}
    for d in dirs.values():
        d.mkdir(parents=True)
    monkeypatch.setenv("STREAMAVATAR_WEIGHTS", str(dirs["env"]))
    monkeypatch.delenv("STREAMAVATAR_MODEL", raising=False)
    monkeypatch.chdir(dirs["cwd"].parent)
    monkeypatch.setattr(hub, "_checkout_weights_dir", lambda: dirs["checkout"])
    return dirs


def test_resolve_model_search_order(search_dirs):
    assert hub.weights_dirs() == [search_dirs[k] for k in ("env", "cwd", "checkout")]
    (search_dirs["checkout"] / "m").mkdir()
    assert hub.resolve_model("m") == search_dirs["checkout"] / "m"
    (search_dirs["cwd"] / "m").mkdir()
    assert hub.resolve_model("m").resolve() == (search_dirs["cwd"] / "m").resolve()
    (search_dirs["env"] / "m").mkdir()
    assert hub.resolve_model("m") == search_dirs["env"] / "m"


def test_resolve_model_paths_env_and_repo_ids(search_dirs, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert hub.resolve_model(str(elsewhere)) == elsewhere
    (search_dirs["env"] / "streamavatar-tiny").mkdir()
    assert hub.resolve_model(None) == search_dirs["env"] / "streamavatar-tiny"
    monkeypatch.setenv("STREAMAVATAR_MODEL", str(elsewhere))
    assert hub.resolve_model(None) == elsewhere
    (search_dirs["cwd"] / "wan2.2-ti2v-5b").mkdir()
    (search_dirs["cwd"] / "avatar").mkdir()
    assert hub.resolve_model("Wan-AI/Wan2.2-TI2V-5B").name == "wan2.2-ti2v-5b"
    assert hub.resolve_model("someone/avatar").name == "avatar"


@pytest.mark.parametrize(
    ("spec", "advice"),
    [
        ("streamavatar-tiny", "--model random-tiny"),
        ("wan2.2-ti2v-5b", "streamavatar download wan2.2-ti2v-5b"),
        ("someone/avatar", "streamavatar download someone/avatar"),
        ("my-model", "STREAMAVATAR_WEIGHTS"),
    ],
)
def test_resolve_model_not_found_says_where_and_what_to_do(search_dirs, spec, advice):
    with pytest.raises(ModelError) as info:
        hub.resolve_model(spec)
    message = str(info.value)
    assert advice in message
    assert all(str(d) in message for d in search_dirs.values())


def test_resolve_model_missing_path(search_dirs, tmp_path):
    with pytest.raises(ModelError, match="no model folder at"):
        hub.resolve_model(str(tmp_path / "nope" / "model"))


def test_checkout_weights_dir_is_next_to_the_package():
    checkout = hub._checkout_weights_dir()
    assert checkout == Path(hub.__file__).resolve().parent.parent / "weights"


# --------------------------------------------------------------------------------------
# Describing model folders


def _diffusers(root: Path) -> None:
    write_json(root / "model_index.json", {"_class_name": "WanPipeline"})
    write_json(root / "transformer" / "config.json", {"_class_name": "WanTransformer3DModel"})
    write_safetensors(root / "transformer" / "diffusion_pytorch_model.safetensors")
    write_json(root / "vae" / "config.json", {"_class_name": "AutoencoderKLWan"})


@pytest.mark.parametrize(
    ("build", "kind", "note"),
    [
        (write_streamavatar, "streamavatar student", "audio untrained"),
        (write_wan_official, "wan2.2 official", ""),
        (_diffusers, "wan2.2 diffusers", "missing vae/diffusion_pytorch_model.safetensors"),
        (write_wav2vec2, "wav2vec2", ""),
        (lambda r: write_json(r / "config.json", {"model_type": "bert"}), "unknown", "not recog"),
        (lambda r: r.mkdir(), "unknown", "no readable config.json"),
    ],
)
def test_describe_model_folder(tmp_path, build, kind, note):
    folder = tmp_path / "m"
    build(folder)
    summary = hub.describe_model_folder(folder)
    assert (summary.name, summary.kind) == ("m", kind)
    assert note in summary.note and (note or summary.note == "")
    on_disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert summary.size_bytes == on_disk


def test_streamavatar_folder_notes_missing_vae(tmp_path):
    write_streamavatar(tmp_path / "m")
    (tmp_path / "m" / "vae.safetensors").unlink()
    note = hub.describe_model_folder(tmp_path / "m").note
    assert "missing vae.safetensors or Wan2.2_VAE.pth" in note


def test_list_models_sorted_skipping_files_and_hidden(tmp_path):
    write_wav2vec2(tmp_path / "b-audio")
    write_streamavatar(tmp_path / "a-avatar")
    (tmp_path / ".cache").mkdir()
    (tmp_path / "README.md").write_text("x")
    assert [m.name for m in hub.list_models(tmp_path)] == ["a-avatar", "b-audio"]
    assert hub.list_models(tmp_path / "missing") == []


def test_human_size():
    assert hub.human_size(2_500_000_000) == "2.5 GB"
    assert hub.human_size(360_000_000) == "360.0 MB"
    assert hub.human_size(12) == "12 B"


# --------------------------------------------------------------------------------------
# CLI


def test_cli_download_failure_exits_5_with_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamavatar_cli",
            "download",
            "wav2vec2-base-960h",
            "--dir",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 5, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "facebook/wav2vec2-base-960h is not in the hub cache" in lines[0]


def test_cli_download_from_cache_prints_folder_and_next_step(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    fake_cache(tmp_path / "cache", "facebook/wav2vec2-base-960h", write_wav2vec2)
    args = ["download", "wav2vec2-base-960h", "--dir", str(tmp_path / "w"), "--local-files-only"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "w" / "wav2vec2-base-960h") in result.output
    assert "next:" in result.output


def test_cli_download_help_lists_every_registry_name():
    result = CliRunner().invoke(app, ["download", "--help"], env={"COLUMNS": "200"})
    assert all(name in result.output for name in hub.REGISTRY)


def test_cli_info_lists_models_or_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "_checkout_weights_dir", lambda: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STREAMAVATAR_WEIGHTS", str(tmp_path / "models"))
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "none found" in result.output and "streamavatar download" in result.output
    write_streamavatar(tmp_path / "models" / "my-avatar")
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "my-avatar" in x)
    assert "streamavatar student" in line and "kB" in line
