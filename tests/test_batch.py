"""`batch`: manifests, sharding, skipping finished jobs, and isolating failing rows."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from streamavatar_cli import cli
from streamavatar_cli.errors import EXIT_BATCH_FAILED, InputError
from streamavatar_cli.pipeline import batch as batching
from streamavatar_cli.pipeline import model as model_module
from streamavatar_cli.video import probe_media


@pytest.fixture
def workdir(tmp_path, examples_dir):
    for name in ("astronaut.png", "agent.wav", "user.wav"):
        (tmp_path / name).symlink_to(examples_dir / name)
    return tmp_path


def write(path, text):
    path.write_text(text)
    return path


def test_csv_and_jsonl_manifests_parse_the_same(workdir):
    csv_rows = batching.read_manifest(
        write(
            workdir / "jobs.csv",
            "id,image,agent_audio,user_audio,seed,resolution\n"
            "a,astronaut.png,agent.wav,user.wav,3,64x64\n"
            "\n"
            "b,astronaut.png,agent.wav,,,\n",
        )
    )
    jsonl_rows = batching.read_manifest(
        write(
            workdir / "jobs.jsonl",
            json.dumps(
                {
                    "id": "a",
                    "image": "astronaut.png",
                    "agent_audio": "agent.wav",
                    "user_audio": "user.wav",
                    "seed": 3,
                    "resolution": "64x64",
                }
            )
            + "\n"
            + json.dumps({"id": "b", "image": "astronaut.png", "agent_audio": "agent.wav"})
            + "\n",
        )  # fmt: skip
    )
    strip = [(r.id, r.image, r.agent_audio, r.user_audio, r.seed, r.resolution) for r in csv_rows]
    assert strip == [
        (r.id, r.image, r.agent_audio, r.user_audio, r.seed, r.resolution) for r in jsonl_rows
    ]
    assert csv_rows[0].image == workdir / "astronaut.png"  # relative to the manifest
    assert (csv_rows[0].seed, csv_rows[0].resolution, csv_rows[1].user_audio) == (3, (64, 64), None)
    assert [r.line for r in csv_rows] == [2, 4]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("m.csv", "", "header"),
        ("m.csv", "id,image\n", "no jobs"),
        ("m.csv", "id,image,agent_audio\nx,a.png\n", "line 2.*fewer fields"),
        ("m.csv", "id,image,agent_audio,colour\nx,a.png,a.wav,red\n", "unknown column.*colour"),
        ("m.csv", "id,image,agent_audio\n../x,a.png,a.wav\n", "line 2: id"),
        ("m.csv", "id,image,agent_audio\nx,a.png,a.wav\nx,b.png,b.wav\n", "line 3.*repeats line 2"),
        ("m.csv", "id,image,agent_audio,seed\nx,a.png,a.wav,seven\n", "seed 'seven'"),
        ("m.csv", "id,image,agent_audio,resolution\nx,a.png,a.wav,64by64\n", "64by64"),
        ("m.jsonl", '{"id": "x", "image": "a.png"}\n{oops\n', "line 2: not valid JSON"),
        ("m.jsonl", '["x"]\n', "line 1: expected a JSON object"),
        ("m.jsonl", '{"id": "x", "image": "a.png", "agent_audio": true}\n', "agent_audio"),
        ("m.jsonl", '{"id": "x", "image": "a.png", "agent_audio": ""}\n', "agent_audio.*empty"),
        ("m.txt", "id\n", "csv or .jsonl"),
    ],
)
def test_bad_manifests_name_the_line(tmp_path, name, text, message):
    with pytest.raises(InputError, match=message):
        batching.read_manifest(write(tmp_path / name, text))


def test_shards_split_the_manifest(monkeypatch):
    rows = list(range(10))
    parts = [batching.take_shard(rows, (i, 3)) for i in range(3)]
    assert sorted(x for p in parts for x in p) == rows and parts[0] == [0, 3, 6, 9]
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(InputError, match="--shard"):
            batching.parse_shard(bad)
    monkeypatch.delenv("RANK", raising=False)
    assert batching.shard_from_env() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert batching.shard_from_env() == (1, 4)


def test_batch_finishes_good_rows_skips_done_ones_and_exits_non_zero(workdir, monkeypatch):
    manifest = write(
        workdir / "jobs.csv",
        "id,image,agent_audio,user_audio,seed,resolution\n"
        "one,astronaut.png,agent.wav,user.wav,1,64x64\n"
        "bad,astronaut.png,missing.wav,,,64x64\n"
        "two,astronaut.png,agent.wav,,2,64x64\n",
    )
    loads, extractors = [], []
    real_extractor = model_module.load_feature_extractor
    monkeypatch.setattr(
        model_module,
        "load_feature_extractor",
        lambda *a, **k: extractors.append(1) or real_extractor(*a, **k),
    )
    real_open = model_module.open_model
    monkeypatch.setattr(
        model_module, "open_model", lambda *a, **k: loads.append(1) or real_open(*a, **k)
    )
    runner = CliRunner()
    args = [
        "batch",
        str(manifest),
        "--out-dir",
        str(workdir / "out"),
        "--model",
        "random-tiny",
        "--json",
    ]
    first = runner.invoke(cli.app, args)
    assert first.exit_code == EXIT_BATCH_FAILED, first.output
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert [(j["id"], j["status"]) for j in report["jobs"]] == [
        ("one", "done"),
        ("bad", "failed"),
        ("two", "done"),
    ]
    assert "missing.wav" in report["jobs"][1]["error"]
    assert len(loads) == 1  # one model for the whole manifest
    assert len(extractors) == 1  # and one audio feature extractor
    assert probe_media(workdir / "out" / "one.mp4").n_frames == 188
    assert not (workdir / "out" / "bad.mp4").exists()
    again = json.loads(runner.invoke(cli.app, args).stdout.strip().splitlines()[-1])
    assert (again["done"], again["skipped"], again["failed"]) == (0, 2, 1)
    shard = json.loads(
        runner.invoke(cli.app, [*args, "--shard", "1/2", "--force"]).stdout.strip().splitlines()[-1]
    )
    assert [(j["id"], j["status"]) for j in shard["jobs"]] == [("bad", "failed")]
    ok = runner.invoke(
        cli.app,
        [
            *args[:2],
            "--out-dir",
            str(workdir / "out"),
            "--model",
            "random-tiny",
            "--shard",
            "0/2",
            "--quiet",
        ],
    )
    assert ok.exit_code == 0 and ok.stdout == ""


def test_the_bundled_example_manifest_is_valid(examples_dir):
    rows = batching.read_manifest(examples_dir / "jobs.csv")
    assert [r.id for r in rows] == ["conversation", "monologue"]
    assert all(r.image.is_file() and r.agent_audio.is_file() for r in rows)
    assert rows[0].user_audio.is_file() and rows[1].resolution == (128, 128)
