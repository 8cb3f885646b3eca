"""Fuzzing the parsers of user-written text: whatever the file or flag holds, the only
exception is `InputError` (which the CLI prints as one line, exit 2), never a TypeError,
KeyError, IndexError, OverflowError or a bare ValueError/UnicodeError escaping as a bug.

Derandomised (a fixed sequence of examples), so CI sees the same inputs on every run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamavatar_cli.audio import load_mask_file
from streamavatar_cli.audio.mask import parse_mask_segments
from streamavatar_cli.errors import InputError
from streamavatar_cli.pipeline.batch import REQUIRED, parse_shard, read_manifest
from streamavatar_cli.video import parse_resolution

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

numbers = (
    st.integers()
    | st.integers(min_value=10**300, max_value=10**400)  # beyond float range
    | st.floats(allow_nan=True, allow_infinity=True)
)
scalars = st.none() | st.booleans() | numbers | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
labels = st.sampled_from(["talk", "listen", "speak", "", "TALK"]) | st.text(max_size=6)
entries = st.lists(st.one_of(numbers, labels, json_values), min_size=0, max_size=4)
mask_data = st.lists(entries, max_size=6) | json_values


def text_or_bytes(alphabet: st.SearchStrategy[str] | None = None) -> st.SearchStrategy:
    """Arbitrary text, text of the format's own characters, and bytes (invalid UTF-8 too)."""
    text = st.text(alphabet=alphabet) if alphabet is not None else st.text()
    return st.text() | text | st.binary()


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def only_input_errors(call) -> None:
    try:
        call()
    except InputError as e:
        assert str(e) and "\n" not in str(e)


# ---- mask files ---------------------------------------------------------------------------------


@FUZZ
@given(data=mask_data, n_frames=st.integers(min_value=0, max_value=10_000))
@example(data=[[0, 10**400, "talk"]], n_frames=10)
@example(data=[[0.0, 1e308, "talk"]], n_frames=10)
def test_mask_segments_from_any_json(data, n_frames):
    only_input_errors(lambda: parse_mask_segments(data, n_frames, "m.json"))


@FUZZ
@given(content=text_or_bytes(st.sampled_from('[]{},:"0123456789.-eE talklisten\n')))
@example(content="[[0, 1" + "0" * 5000 + ', "talk"]]')
@example(content="[" * 100_000)
@example(content=b"\xff\xfe[")
def test_mask_file_with_any_content(folder, content):
    path = write(folder / "mask.json", content)
    only_input_errors(lambda: load_mask_file(path, 250))


@FUZZ
@given(segments=st.lists(st.tuples(numbers, numbers, labels), max_size=5))
def test_mask_file_of_well_formed_json(folder, segments):
    path = write(folder / "mask.json", json.dumps([list(s) for s in segments]))
    only_input_errors(lambda: load_mask_file(path, 250))


# ---- manifests ----------------------------------------------------------------------------------

cells = st.text(alphabet=st.characters(exclude_characters=',\n\r"')) | st.sampled_from(
    ["64x64", "1e9", "-1", "0/0", "~nobody/x.png", "9" * 5000, "x.wav", ""]
)
columns = st.sampled_from([*REQUIRED, "user_audio", "mask", "seed", "resolution", "colour"])


@st.composite
def csv_manifests(draw) -> str:
    header = draw(st.lists(columns, min_size=0, max_size=8))
    rows = draw(st.lists(st.lists(cells, max_size=len(header) + 1), max_size=4))
    return "\n".join([",".join(header), *(",".join(r) for r in rows)])


@st.composite
def jsonl_manifests(draw) -> str:
    records = draw(
        st.lists(
            st.dictionaries(columns, json_values | cells, max_size=8) | json_values, max_size=4
        )
    )
    return "\n".join(json.dumps(r) for r in records)


@FUZZ
@given(content=csv_manifests() | text_or_bytes(st.sampled_from('id,image,agent_audio"\n\r x')))
@example(content="id,image,agent_audio,seed\nx,a.png,a.wav," + "9" * 5000)
@example(content="id,image,agent_audio,resolution\nx,a.png,a.wav," + "6" * 5000 + "x64")
@example(content='id,image,agent_audio\n"x,a.png,a.wav')
@example(content="id,image,agent_audio\nx,a.png,a.wav\x00")
def test_csv_manifest_with_any_content(folder, content):
    path = write(folder / "jobs.csv", content)
    only_input_errors(lambda: read_manifest(path))


@FUZZ
@given(content=jsonl_manifests() | text_or_bytes(st.sampled_from('{}[]":,1 id\n')))
@example(content='{"id": "x", "image": "a.png", "agent_audio": "a.wav", "seed": 1e999}')
@example(content='{"id": "x", "image": "a.png", "agent_audio": "a.wav", "seed": ' + "9" * 5000)
def test_jsonl_manifest_with_any_content(folder, content):
    path = write(folder / "jobs.jsonl", content)
    only_input_errors(lambda: read_manifest(path))


# ---- resolution and shard -----------------------------------------------------------------------

resolution_like = st.from_regex(r"\s*[+-]?\d{0,6}\s*[xX*×]?\s*[+-]?\d{0,6}\s*", fullmatch=True)


@FUZZ
@given(
    text=st.text() | resolution_like,
    stride=st.none() | st.integers(min_value=1, max_value=64),
)
@example(text="9" * 5000 + "x64", stride=None)
@example(text="١٢٨x٦٤", stride=16)  # Arabic-Indic digits: \d matches them
@example(text="64x64\x00", stride=None)
def test_resolution_from_any_text(text, stride):
    try:
        width, height = parse_resolution(text, stride=stride)
    except InputError as e:
        assert "\n" not in str(e)
    else:
        assert 0 < width <= 8192 and 0 < height <= 8192
        assert stride is None or (width % stride == 0 and height % stride == 0)


@FUZZ
@given(text=st.text() | st.from_regex(r"\s*\d{0,4}\s*/?\s*\d{0,4}\s*", fullmatch=True))
@example(text="0/" + "9" * 5000)
def test_shard_from_any_text(text):
    try:
        index, count = parse_shard(text)
    except InputError:
        return
    assert 0 <= index < count
