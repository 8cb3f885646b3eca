"""The speak/listen mask: VAD against the examples' ground truth, smoothing, the overlap
rule, the `--mask` file format and the `streamavatar mask` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from streamavatar_cli.audio import (
    compute_speak_mask,
    format_timeline,
    load_audio,
    load_mask_file,
    mask_to_segments,
    save_mask_file,
    segments_to_mask,
    smooth_mask,
)
from streamavatar_cli.audio.vad import resolve_overlaps
from streamavatar_cli.cli import app
from streamavatar_cli.errors import InputError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TRUTH = json.loads((EXAMPLES / "segments.json").read_text())["segments"]
TOLERANCE_S = 0.15


@pytest.fixture(scope="module")
def tracks() -> dict[str, np.ndarray]:
    return {name: load_audio(EXAMPLES / f"{name}.wav") for name in ("agent", "user")}


def talk_segments(mask: np.ndarray) -> list[tuple[float, float]]:
    return [(a, b) for a, b, label in mask_to_segments(mask) if label == "talk"]


def assert_matches_truth(found, truth) -> None:
    assert len(found) == len(truth), f"found {found}, truth {truth}"
    for (a, b), (ta, tb) in zip(found, truth, strict=True):
        assert abs(a - ta) <= TOLERANCE_S and abs(b - tb) <= TOLERANCE_S, (found, truth)


@pytest.mark.parametrize("name", ["agent", "user"])
def test_vad_finds_the_spoken_segments(tracks, name):
    # measured errors: agent 0.00/0.03, 0.02/0.03 s; user 0.00/0.02 s (start/end)
    mask = compute_speak_mask(tracks[name], listen_when_silent=True)
    # "Hello! I am your streaming avatar." has a 0.32 s pause: still one segment
    assert_matches_truth(talk_segments(mask), TRUTH[name])


def test_two_tracks_talk_while_the_agent_speaks(tracks):
    mask = compute_speak_mask(tracks["agent"], tracks["user"])
    assert mask.dtype == np.int8 and len(mask) == 188
    assert_matches_truth(talk_segments(mask), TRUTH["agent"])


def test_one_track_talks_throughout_unless_asked(tracks):
    assert compute_speak_mask(tracks["user"]).all()
    longer = np.concatenate([tracks["agent"], np.zeros(16000, dtype=np.float32)])
    assert len(compute_speak_mask(tracks["agent"], longer)) == 213  # the mix's length


def test_louder_user_takes_the_overlap(tracks):
    agent = tracks["agent"]
    assert not compute_speak_mask(agent, 2.0 * agent).any()  # same timing, user louder
    np.testing.assert_array_equal(
        compute_speak_mask(agent, 0.5 * agent), compute_speak_mask(agent, np.zeros_like(agent))
    )


def test_overlap_rule_decides_per_region():
    agent = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 1], dtype=bool)
    user = np.array([0, 0, 1, 1, 0, 0, 1, 1, 1, 1], dtype=bool)
    agent_rms = np.array([1, 1, 0.2, 0.9, 1, 1, 0, 0, 1, 1])
    user_rms = np.array([0, 0, 0.8, 0.8, 0, 0, 1, 1, 0.5, 0.5])
    # region 2-3: user mean 0.8 > agent mean 0.55 -> listen, although frame 3 alone is the
    # agent's; region 8-9: agent louder -> talk
    expected = np.array([1, 1, 0, 0, 1, 1, 0, 0, 1, 1], dtype=bool)
    np.testing.assert_array_equal(resolve_overlaps(agent, user, agent_rms, user_rms), expected)


def frames(pattern: str) -> np.ndarray:
    return np.array([c == "#" for c in pattern])


@pytest.mark.parametrize(
    "before, after",
    [
        ("..#####......#####..", "..#####......#####.."),  # 6-frame gap (0.24 s) >= 0.2 s
        ("..#####...#####.....", "..#############....."),  # 3-frame gap (0.12 s) filled
        ("...##......########.", "...........########."),  # 2-frame talk (0.08 s) dropped
        ("#.#.#.#.#...........", "#########..........."),  # word-by-word: one segment
    ],
)
def test_smoothing_fills_gaps_then_drops_short_talk(before, after):
    np.testing.assert_array_equal(smooth_mask(frames(before), 0.2, 0.2), frames(after))


def test_mask_file_round_trip(tmp_path, tracks):
    mask = compute_speak_mask(tracks["agent"], tracks["user"])
    save_mask_file(tmp_path / "m.json", mask)
    entries = json.loads((tmp_path / "m.json").read_text())
    assert entries[1] == [0.4, 2.68, "talk"]
    np.testing.assert_array_equal(load_mask_file(tmp_path / "m.json", len(mask)), mask)


def test_uncovered_frames_listen_and_edges_round_to_frames(tmp_path):
    (tmp_path / "m.json").write_text('[[1.0, 2.0, "listen"], [0.41, 0.61, "talk"]]')
    mask = load_mask_file(tmp_path / "m.json", 75)
    # frame j is talk when its centre (j + 0.5) / 25 lies in [0.41, 0.61): j = 10 .. 14
    np.testing.assert_array_equal(np.nonzero(mask)[0], np.arange(10, 15))
    np.testing.assert_array_equal(segments_to_mask([(0.0, 3.0, "talk")], 75), np.ones(75))


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[0, 1, 'talk']]", "not valid JSON .* line 1"),
        ('{"talk": [0, 1]}', "expected a JSON list"),
        ('[[0, 1, "talk"], [2, 3]]', r"entry 1 is \[2, 3\]; each entry must be"),
        ('[[0, 1, "talk"], "2-3 talk"]', "entry 1 is "),
        ('[["0", 1, "talk"]]', "entry 0: start '0' is not a number"),
        ('[[true, 1, "talk"]]', "entry 0: start True is not a number"),
        ('[[-1, 1, "talk"]]', "entry 0: start -1 must be a finite number >= 0"),
        ('[[0, NaN, "talk"]]', "entry 0: end nan must be a finite number"),
        ('[[0, Infinity, "talk"]]', "entry 0: end inf must be a finite number"),
        ('[[2, 1, "talk"]]', "entry 0: start 2.0 s must be before end 1.0 s"),
        ('[[1, 1, "talk"]]', "entry 0: start 1.0 s must be before end"),
        ('[[0, 1, "speak"]]', "entry 0: label 'speak' is unknown; allowed"),
        ('[[0, 2, "talk"], [3, 4, "talk"], [1, 2.5, "listen"]]', "entries 0 and 2 overlap"),
        ('[[0, 3.1, "talk"]]', r"entry 0 ends at 3.1 s, after the end of the audio \(3.00 s\)"),
    ],
)
def test_bad_mask_files_name_the_entry(tmp_path, text, message):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        load_mask_file(path, 75)  # 3.00 s
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_end_within_one_frame_of_the_audio_is_accepted(tmp_path):
    (tmp_path / "m.json").write_text('[[0, 3.04, "talk"], [3.04, 3.04001, "listen"]]')
    with pytest.raises(InputError, match="entry 1 ends at"):
        load_mask_file(tmp_path / "m.json", 75)
    (tmp_path / "m.json").write_text('[[2, 3.04, "talk"]]')
    assert load_mask_file(tmp_path / "m.json", 75)[50:].all()


def test_missing_mask_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_mask_file(tmp_path / "nope.json", 10)


def test_timeline_lists_segments_and_draws_a_bar():
    mask = frames("." * 10 + "#" * 30 + "." * 10)
    text = format_timeline(mask, width=25)
    lines = text.splitlines()
    assert lines[:3] == ["   0.00 s -    0.40 s  listen", "   0.40 s -    1.60 s  talk",
                         "   1.60 s -    2.00 s  listen"]  # fmt: skip
    assert "talk 1.20 s (60 %)" in lines[3]
    assert lines[4].startswith("|" + "." * 5 + "#" * 15 + "." * 5 + "|")
    assert format_timeline(np.zeros(0, dtype=np.int8)) == "(no frames)"


def test_mask_command_prints_and_saves(tmp_path):
    out = tmp_path / "m.json"
    agent, user = str(EXAMPLES / "agent.wav"), str(EXAMPLES / "user.wav")
    result = CliRunner().invoke(app, ["mask", agent, user, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "0.40 s -    2.68 s  talk" in result.output and "#" in result.output
    saved = load_mask_file(out, 188)
    assert_matches_truth(talk_segments(saved), TRUTH["agent"])
    one = CliRunner().invoke(app, ["mask", user, "--listen-when-silent"])
    assert "3.00 s -    5.08 s  talk" in one.output


def test_mask_command_bad_input_exits_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "streamavatar_cli", "mask", str(tmp_path / "none.wav")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
