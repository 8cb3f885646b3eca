"""Every failure a user can cause, through the real command line (issue 8).

Each failing case must exit with its documented code, print exactly one line on stderr that
names the problem and the fix, show no traceback, and leave neither an output nor a temp file.
Valid but unusual inputs (16-bit, palette, CMYK, animated images; 8/24-bit, float, 48 kHz,
stereo WAV, mp3, ogg; tracks of very different lengths; odd path names) must render.

Cases run `cli.main()` in this process (a render is then about a second once the CPU kernels
are warm); the cases marked `process` run as a real `python -m streamavatar_cli` subprocess,
either because they need one (file permissions: as root, the child drops the capabilities that
let root ignore them) or to check that the exit code and message are the same there.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from streamavatar_cli import cli
from streamavatar_cli.audio import num_video_frames
from streamavatar_cli.config import AUDIO_SAMPLE_RATE as SR
from streamavatar_cli.diagnostics import ffmpeg_exe
from streamavatar_cli.pipeline.model import random_tiny_model, save_model
from streamavatar_cli.video import probe_media

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# Root reads and writes regardless of permission bits; without these two capabilities it cannot.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if AS_ROOT else []
TEMP = ".*.tmp*"
"""The writer's and the output probe's temp files (`.<name>.<hex>.tmp<suffix>`)."""


# ---- the input tree, built once ---------------------------------------------------------------


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True)


def speech(seconds: float) -> np.ndarray:
    wave, rate = sf.read(EXAMPLES / "agent.wav", dtype="float32")
    assert rate == SR
    return np.resize(wave, int(round(seconds * SR)))  # repeats the clip if asked for more


def make_images(root: Path) -> None:
    photo = Image.open(EXAMPLES / "astronaut.png").convert("RGB").resize((80, 64))
    photo.save(root / "img.png")
    photo.convert("CMYK").save(root / "cmyk.jpg")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.png")
    grey16 = (np.asarray(photo.convert("L"), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(root / "grey16.png")
    assert Image.open(root / "grey16.png").mode.startswith("I;16")
    frames = [photo.convert("P"), photo.rotate(90).convert("P")]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=40)
    Image.new("RGB", (1, 1)).save(root / "1x1.png")
    Image.new("RGB", (20000, 100)).save(root / "20000x100.png")
    (root / "empty.png").write_bytes(b"")
    data = (root / "img.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "text.png").write_text("not a picture")


def make_audio(root: Path) -> None:
    sf.write(root / "a.wav", speech(0.5), SR)
    sf.write(root / "2s.wav", speech(2.0), SR)
    sf.write(root / "0.05s.wav", speech(0.05), SR)
    sf.write(root / "0.01s.wav", speech(0.01), SR)
    sf.write(root / "silence.wav", np.zeros(SR // 2, np.float32), SR)
    (root / "empty.wav").write_bytes(b"")
    (root / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    formats = {
        "u8.wav": ["-c:a", "pcm_u8"],
        "s24.wav": ["-c:a", "pcm_s24le"],
        "f32.wav": ["-c:a", "pcm_f32le"],
        "48k-stereo.wav": ["-ar", "48000", "-ac", "2"],
        "speech.mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
        "speech.ogg": ["-c:a", "libvorbis"],
    }
    for name, args in formats.items():
        ffmpeg("-i", str(root / "a.wav"), *args, str(root / name))
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x64:r=25:d=1", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(root / "no-audio.mp4"))  # fmt: skip


MASKS = {
    "bad.json": '[[0, 0.2, "talk"',
    "negative.json": '[[-0.5, 0.2, "talk"]]',
    "overlap.json": '[[0, 0.3, "talk"], [0.2, 0.4, "listen"]]',
    "out-of-range.json": '[[0, 9, "talk"]]',
    "label.json": '[[0, 0.2, "speak"]]',
    "good.json": '[[0, 0.2, "talk"], [0.2, 0.5, "listen"]]',
    "huge.json": "[[0, 1" + "0" * 5000 + ', "talk"]]',
}


def edit_tensors(file: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(file)
    change(tensors)
    save_file(tensors, file)


def edit_config(folder: Path, change: Callable[[dict], None]) -> None:
    data = json.loads((folder / "config.json").read_text())
    change(data)
    (folder / "config.json").write_text(json.dumps(data))


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


class MarkerPickle:
    """Unpickling this would create a marker file: the shape of a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def first_key(tensors: dict[str, torch.Tensor]) -> str:
    return sorted(tensors)[0]


MODEL_VARIANTS: dict[str, Callable[[Path], None]] = {
    "ok": lambda d: None,
    "empty-folder": lambda d: [p.unlink() for p in d.iterdir()],
    "bad-config-json": lambda d: (d / "config.json").write_text("{"),
    "truncated-dit": lambda d: truncate(d / "dit.safetensors"),
    "truncated-vae": lambda d: truncate(d / "vae.safetensors"),
    "no-vae": lambda d: (d / "vae.safetensors").unlink(),
    "more-layers": lambda d: edit_config(d, lambda c: c["dit"].update(num_layers=3)),
    "wider-ffn": lambda d: edit_config(d, lambda c: c["dit"].update(ffn_dim=512)),
    "int-dit": lambda d: edit_tensors(
        d / "dit.safetensors", lambda t: t.update({first_key(t): t[first_key(t)].to(torch.int32)})
    ),
    "bool-vae": lambda d: edit_tensors(
        d / "vae.safetensors", lambda t: t.update({first_key(t): t[first_key(t)] > 0})
    ),
    "fp16": lambda d: edit_tensors(
        d / "dit.safetensors", lambda t: t.update({k: v.half() for k, v in t.items()})
    ),
    "dtype-in-config": lambda d: edit_config(d, lambda c: c.update(dtype="fp8")),
    "teacher": lambda d: edit_config(d, lambda c: c.update(kind="teacher")),
    "pickle-vae": lambda d: (
        (d / "vae.safetensors").unlink(),
        torch.save({"conv1.weight": MarkerPickle(d / "MARKER")}, d / "Wan2.2_VAE.pth"),
    ),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad input")
    make_images(root)
    make_audio(root)
    for name, text in MASKS.items():
        (root / name).write_text(text)
    (root / "latin-1.json").write_bytes('[[0, 0.2, "t\u00e4lk"]]'.encode("latin-1"))
    base = save_model(random_tiny_model(), root / "models" / "ok")
    assert json.loads((base / "config.json").read_text())["dit"]["num_layers"] == 2
    for name, change in MODEL_VARIANTS.items():
        if name != "ok":
            shutil.copytree(base, root / "models" / name)
            change(root / "models" / name)
    odd = root / "my take [1] ü"
    odd.mkdir()
    shutil.copy(root / "img.png", odd / "fötö 1.png")
    shutil.copy(root / "a.wav", odd / "声 voice.wav")
    (root / "jobs.csv").write_text("id,image,agent_audio\nx,img.png,a.wav\n")
    for locked, source in [("png", "img.png"), ("wav", "a.wav"), ("json", "good.json"),
                           ("csv", "jobs.csv")]:  # fmt: skip
        shutil.copy(root / source, root / f"locked.{locked}")
        (root / f"locked.{locked}").chmod(0)
    (root / "read-only").mkdir()
    (root / "read-only").chmod(0o555)
    (root / "a-file").write_text("not a folder")
    (root / "exists.mp4").write_bytes(b"keep me")
    (root / "replace.mp4").write_bytes(b"replace me")
    (root / "out").mkdir()
    return root


# ---- the cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One invocation. Render options name files in the tree; `argv` replaces them all."""

    id: str
    code: int
    phrase: str = ""  # regex the error line must match; `<tree>` is the tree's path
    image: str = "img.png"
    agent: str = "a.wav"
    user: str | None = None
    mask: str | None = None
    output: str | None = None  # default out/<id>.mp4
    model: str = "random-tiny"
    extra: tuple[str, ...] = ()
    argv: tuple[str, ...] | None = None
    seconds: float | None = None  # successes: the audio length the MP4 must have
    process: bool = False  # also (or only, see PROCESS_ONLY) run as a real subprocess
    marks: tuple = field(default=())

    def output_path(self, tree: Path) -> Path:
        return tree / (self.output or f"out/{slug(self.id)}.mp4")

    def args(self, tree: Path) -> list[str]:
        if self.argv is not None:
            return [a.replace("<tree>", str(tree)) for a in self.argv]
        args = ["render", "-i", str(tree / self.image), "-a", str(tree / self.agent)]
        args += ["-o", str(self.output_path(tree))]
        args += ["-u", str(tree / self.user)] if self.user else []
        args += ["--mask", str(tree / self.mask)] if self.mask else []
        model = self.model if self.model == "random-tiny" else str(tree / "models" / self.model)
        return [*args, "--model", model, "--resolution", "64x64", *self.extra]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def ok(case_id: str, seconds: float = 0.5, **kw) -> Case:
    return Case(case_id, 0, seconds=seconds, **kw)


LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
PERMISSIONS = pytest.mark.skipif(
    os.name != "posix" or (AS_ROOT and shutil.which("setpriv") is None),
    reason="needs POSIX permissions (and setpriv when running as root)",
)

# fmt: off
CASES = [
    # paths
    Case("image missing", 2, "img-nope.png does not exist: check the path", image="img-nope.png"),
    Case("image is a directory", 2, "is a directory: give an image file", image="out"),
    Case("image unreadable", 2, "'--image' / '-i': path .*locked.png' is not readable",
         image="locked.png", process=True, marks=(PERMISSIONS,)),
    Case("audio missing", 2, "nope.wav does not exist: check the path", agent="nope.wav",
         process=True),
    Case("audio is a directory", 2, "is a directory: give an audio or video file", agent="out"),
    Case("audio unreadable", 2, "'--agent-audio' / '-a': path .*' is not readable",
         agent="locked.wav", process=True, marks=(PERMISSIONS,)),
    Case("user audio missing", 2, "nope.wav does not exist", user="nope.wav"),
    Case("mask missing", 2, "mask file .*nope.json does not exist: check the path",
         mask="nope.json"),
    Case("mask unreadable", 2, "'--mask': path .*locked.json' is not readable",
         mask="locked.json", process=True, marks=(PERMISSIONS,)),
    Case("missing path is quoted verbatim", 2,
         re.escape("<tree>/my take [1] ü/[draft].png does not exist"),
         image="my take [1] ü/[draft].png"),
    # images
    Case("image corrupt", 2, "could not be decoded.*truncated or corrupt, re-export it",
         image="truncated.png"),
    Case("image not an image", 2, "not an image file.*use a PNG, JPEG or WebP",
         image="text.png"),
    Case("image zero bytes", 2, r"is empty \(0 bytes\): re-export", image="empty.png"),
    Case("image 1x1", 2, "only 1x1 pixels; each side must be at least 32", image="1x1.png"),
    Case("image 20000x100", 2, "aspect ratio of 200.0:1.*crop it around the person",
         image="20000x100.png"),
    ok("image 16-bit", image="grey16.png"),
    ok("image palette", image="palette.png"),
    ok("image CMYK", image="cmyk.jpg"),
    ok("image animated", image="animated.gif"),
    # audio
    Case("audio zero bytes", 2, r"is empty \(0 bytes\): give a real recording", agent="empty.wav"),
    Case("audio corrupt", 2, "cannot decode .*corrupt.wav as audio.*corrupt or unsupported",
         agent="corrupt.wav"),
    Case("audio shorter than a frame", 2, "shorter than one video frame.*at least 0.04 s",
         agent="0.01s.wav"),
    ok("audio 0.05 s is one frame", 0.05, agent="0.05s.wav"),
    ok("audio pure silence", agent="silence.wav"),
    ok("audio pure silence, listening", agent="silence.wav", extra=("--listen-when-silent",)),
    Case("video without an audio track", 2, "has no audio stream: give a file that contains",
         agent="no-audio.mp4"),
    ok("audio 8-bit wav", agent="u8.wav"),
    ok("audio 24-bit wav", agent="s24.wav"),
    ok("audio float wav", agent="f32.wav"),
    ok("audio 48 kHz stereo wav", agent="48k-stereo.wav"),
    ok("audio mp3", agent="speech.mp3"),
    ok("audio ogg", agent="speech.ogg"),
    ok("user audio much longer", 2.0, user="2s.wav"),
    ok("user audio much shorter", 2.0, agent="2s.wav", user="a.wav"),
    # mask files
    ok("mask good", mask="good.json"),
    Case("mask bad JSON", 2, "not valid JSON.*write one with `streamavatar mask", mask="bad.json"),
    Case("mask negative", 2, "entry 0: start -0.5 must be a finite number >= 0",
         mask="negative.json"),
    Case("mask overlapping", 2, "entries 0 and 1 overlap.*must not overlap", mask="overlap.json"),
    Case("mask out of range", 2, "ends at 9.0 s, after the end of the audio.*shorten it",
         mask="out-of-range.json"),
    Case("mask not UTF-8", 2, "is not UTF-8 text .*save it as UTF-8", mask="latin-1.json"),
    Case("mask with a 5000-digit number", 2, "is not a mask .*write one with `streamavatar mask",
         mask="huge.json"),
    Case("mask unknown label", 2, """label 'speak' is unknown; allowed: "talk", "listen\"""",
         mask="label.json"),
    # resolution and other values
    Case("resolution malformed", 2, "not of the form WIDTHxHEIGHT; write it like 1280x704",
         extra=("--resolution", "64by64"), process=True),
    Case("resolution off the stride", 2,
         "not a multiple of 16.*nearest valid sizes: 64x64, 80x64, 64x80",
         extra=("--resolution", "65x64")),
    Case("resolution zero", 2, "has a side <= 0", extra=("--resolution", "0x64")),
    Case("resolution huge", 2, "too large; each side must be at most 8192",
         extra=("--resolution", "99999x64")),
    Case("area below one block", 2, r"max_area=1 \(--area\) is below one 16x16 block.* 256",
         argv=("render", "-i", "<tree>/img.png", "-a", "<tree>/a.wav", "-o",
               "<tree>/out/area.mp4", "--model", "random-tiny", "--area", "1")),
    Case("unknown fit", 2, r"--fit: 'stretch'; choose from crop, pad \(see `streamavatar render",
         extra=("--fit", "stretch"), process=True),
    Case("crf out of range", 2, "'--crf'.*less than or equal to 51", extra=("--crf", "99")),
    Case("steps not a number", 2, "'--steps'.*valid integer", extra=("--steps", "two")),
    Case("talk guidance negative", 2, "'--talk-guidance'.*greater than or equal to 0",
         extra=("--talk-guidance", "-1")),
    Case("listen guidance negative", 2, "'--listen-guidance'.*greater than or equal to 0",
         extra=("--listen-guidance", "-0.5")),
    Case("missing option", 2, "Missing option '--agent-audio'",
         argv=("render", "-i", "<tree>/img.png", "-o", "<tree>/out/x.mp4")),
    Case("unknown dtype", 2, "unknown dtype 'fp8'; use fp32, bf16 or fp16",
         extra=("--dtype", "fp8")),
    Case("cuda without cuda", 2, "no CUDA; use --device cpu", extra=("--device", "cuda"),
         marks=(pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA"),)),
    Case("separate features, one track", 2, "needs a user track",
         extra=("--features", "separate")),
    # model folders
    Case("model folder missing", 3, "no model folder at .*check the path given to --model",
         model="nope", process=True),
    Case("model folder empty", 3, "no config.json: not a StreamAvatar model folder",
         model="empty-folder"),
    Case("model config not JSON", 3, "config.json: not valid JSON", model="bad-config-json"),
    Case("model truncated dit", 3, "dit.safetensors: cannot read.*truncated: download it again",
         model="truncated-dit", process=True),
    Case("model truncated vae", 3, "vae.safetensors: cannot read.*truncated: download it again",
         model="truncated-vae"),
    Case("model without vae", 3, r"no VAE weights \(vae.safetensors or Wan2.2_VAE.pth\)",
         model="no-vae"),
    Case("model config has more layers", 3, "missing tensor.*config does not match",
         model="more-layers"),
    Case("model config has other widths", 3, "has shape .*config does not match these weights",
         model="wider-ffn"),
    Case("model int tensor", 3, "is int32, the model expects float32.*download or convert",
         model="int-dit"),
    Case("model bool tensor", 3, "is bool, the model expects float32", model="bool-vae"),
    Case("model dtype in config", 3, r"unknown key\(s\) \['dtype'\]", model="dtype-in-config"),
    ok("model half-precision weights", model="fp16"),
    Case("model teacher", 3, "teacher checkpoint.*render needs a distilled streaming student",
         model="teacher"),
    Case("model pickle with code", 3, "Wan2.2_VAE.pth: refused to load.*could run code",
         model="pickle-vae"),
    # output
    Case("output folder missing", 4, "output directory .* does not exist; create it first",
         output="nope/out.mp4"),
    Case("output folder is a file", 4, "is a file, not a directory; choose another",
         output="a-file/out.mp4"),
    Case("output folder read-only", 4, "cannot write in output directory .*choose a writable",
         output="read-only/out.mp4", process=True, marks=(PERMISSIONS,)),
    Case("output under /proc", 4, "cannot write in output directory /proc",
         output="/proc/out.mp4", marks=(LINUX,)),
    Case("output exists", 4, "already exists; use --overwrite", output="exists.mp4",
         process=True),
    Case("output is a directory", 4, "is a directory; give a file name", output="out"),
    ok("output replaced with --overwrite", output="replace.mp4", extra=("--overwrite",)),
    ok("paths with spaces, brackets and non-ASCII",
       image="my take [1] ü/fötö 1.png", agent="my take [1] ü/声 voice.wav",
       output="my take [1] ü/out [1] é.mp4"),
    # batch
    Case("manifest missing", 2, "manifest .*nope.csv does not exist",
         argv=("batch", "<tree>/nope.csv", "--out-dir", "<tree>/out", "--model", "random-tiny")),
    Case("manifest unreadable", 2, "'manifest': path .*locked.csv' is not readable",
         argv=("batch", "<tree>/locked.csv", "--out-dir", "<tree>/out"),
         process=True, marks=(PERMISSIONS,)),
    Case("shard out of range", 2, r"--shard '2/2': need 0 <= i < n",
         argv=("batch", "<tree>/jobs.csv", "--out-dir", "<tree>/out", "--shard", "2/2")),
]
PROCESS_ONLY = {"image unreadable", "audio unreadable", "mask unreadable",
                "output folder read-only", "manifest unreadable"}
# fmt: on
"""Permission cases: as root they need the child to drop its capabilities."""


# ---- running and checking ---------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def run_in_process(args: list[str]) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["streamavatar", *args]
    code = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    assert isinstance(code, int), f"main() must end with an integer exit code, got {code!r}"
    return Outcome(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def subprocesses(tree) -> dict[str, subprocess.Popen]:
    """Every `process` case started at once (they overlap on the two cores), awaited by id."""
    env = {**os.environ, "COLUMNS": "400"}  # the in-process runs do not wrap either
    started = {}
    for case in CASES:
        if case.process and not skipped(case):
            command = [sys.executable, "-m", "streamavatar_cli", *case.args(tree)]
            if case.id in PROCESS_ONLY:
                command = NO_DAC + command
            started[case.id] = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
    yield started
    for proc in started.values():
        proc.kill()
        proc.wait()


def skipped(case: Case) -> bool:
    return any(m.name == "skipif" and m.args[0] for m in case.marks)


def run_in_subprocess(proc: subprocess.Popen) -> Outcome:
    stdout, stderr = proc.communicate(timeout=300)
    return Outcome(proc.returncode, stdout, stderr)


def check_failure(case: Case, outcome: Outcome, tree: Path) -> None:
    assert outcome.code == case.code, outcome.stderr
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"one line on stderr, got:\n{outcome.stderr}"
    assert lines[0].startswith("error: ")
    assert re.search(case.phrase.replace("<tree>", re.escape(str(tree))), lines[0]), lines[0]
    assert outcome.stdout == ""


def check_success(case: Case, outcome: Outcome, tree: Path) -> None:
    assert outcome.code == 0, outcome.stderr
    assert "error" not in outcome.stderr.lower()
    info = probe_media(case.output_path(tree))
    samples = round(case.seconds * SR)
    assert info.n_frames == num_video_frames(samples)
    assert info.audio_duration == pytest.approx(case.seconds, abs=0.02)
    assert (info.width, info.height) == (64, 64)


def check_nothing_left(case: Case, tree: Path, before: bytes | None) -> None:
    output = case.output_path(tree)
    if before is not None:  # an existing file is never touched by a failure
        assert output.read_bytes() == before
    elif case.code != 0:
        assert not output.is_file()
    for folder in (tree, tree / "out", output.parent):
        if folder.is_dir() and os.access(folder, os.R_OK):
            assert not list(folder.glob(TEMP)), f"temp files left in {folder}"


@pytest.mark.parametrize("case", [pytest.param(c, id=slug(c.id), marks=c.marks) for c in CASES])
def test_case(case: Case, tree: Path, subprocesses):
    output = case.output_path(tree)
    before = output.read_bytes() if output.is_file() and case.code != 0 else None
    outcomes = []
    if case.id not in PROCESS_ONLY:
        outcomes.append(run_in_process(case.args(tree)))
    if case.process:
        outcomes.append(run_in_subprocess(subprocesses[case.id]))
    for outcome in outcomes:
        assert "Traceback" not in outcome.stderr, outcome.stderr
        if case.code == 0:
            check_success(case, outcome, tree)
        else:
            check_failure(case, outcome, tree)
    if len(outcomes) == 2:  # the same code and message in-process and as a real command
        here, there = outcomes
        assert (here.code, here.stderr.strip()) == (there.code, there.stderr.strip())
    check_nothing_left(case, tree, before)
    assert not (tree / "models" / "pickle-vae" / "MARKER").exists(), "the pickle ran code"


def test_the_table_covers_the_issue():
    """Issue 8 asks for at least 30 cases; a third of them valid inputs that must render."""
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.code == 0 for c in CASES) >= 15
    assert {c.code for c in CASES} == {0, 2, 3, 4}
