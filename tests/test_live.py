"""Live rendering (issue 15): audio from a pipe or FIFO, video to stdout, a growing .ts or HLS.

Through the real command line: `-o -` decodes to the exact frame count and stdout holds nothing
but MPEG-TS; bytes leave stdout while the input pipe is still open; a closed stdout ends with
one line, exit 141 and no process left; bad stream formats fail with one line. Unit level: the
streamed features, windows and mask smoothing equal the whole-file ones.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from streamavatar_cli.audio import MelFeatures, latent_windows, load_audio, smooth_mask
from streamavatar_cli.audio.online import StreamingFeatures, WindowedSmoother
from streamavatar_cli.config import AUDIO_SAMPLE_RATE as SR
from streamavatar_cli.config import AudioWindow
from streamavatar_cli.pipeline.live import _FrameStore
from streamavatar_cli.video import probe_media
from streamavatar_cli.video.live import ERROR_POLL_S, _AudioPump

pytestmark = pytest.mark.skipif(os.name != "posix", reason="pipes, FIFOs and signals are POSIX")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RENDER = ["render", "-i", str(EXAMPLES / "astronaut.png"), "--model", "random-tiny"]
SMALL = ["--resolution", "64x64"]
TS_PACKET = 188


def wav_bytes(seconds: float) -> bytes:
    wave, rate = sf.read(EXAMPLES / "agent.wav", dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, np.resize(wave, round(seconds * rate)), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def s16le_bytes(seconds: float) -> bytes:
    wave, _ = sf.read(EXAMPLES / "agent.wav", dtype="int16")
    return np.resize(wave, round(seconds * SR)).astype("<i2").tobytes()


def start(*args: str, marker: str, **kw) -> subprocess.Popen:
    """The CLI with SIGINT at its default (see test_interrupt) and a marker in its environment,
    which every child (ffmpeg) inherits: how leftover processes are found. Its faulthandler is
    on, so `communicate` can show where a hung process stands."""
    env = {**os.environ, "STREAMAVATAR_TEST_MARKER": marker, "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "streamavatar_cli", *args],
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kw,
    )


def communicate(proc: subprocess.Popen, timeout: float, stdin=None) -> tuple:
    """`proc.communicate`, but a process still running after `timeout` s fails the test with
    every thread's stack (SIGABRT makes the faulthandler print them) and its children's states."""
    try:
        return proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        states = [Path(f"/proc/{c}/stat").read_text().split(")")[1].split()[0] for c in children]
        proc.send_signal(signal.SIGABRT)
        for child in children:  # they may hold our pipes open
            os.kill(int(child), signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"still running after {timeout} s; children {children} in states {states}; "
                    f"stderr:\n{err}")  # fmt: skip


def processes_with(marker: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"STREAMAVATAR_TEST_MARKER={marker}".encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue  # exited meanwhile, or not ours to read
    return found


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# ---- video out ---------------------------------------------------------------------------------


def test_stdout_carries_only_mpeg_ts_with_the_exact_frame_count(tmp_path):
    marker = uuid.uuid4().hex
    proc = start(
        *RENDER, *SMALL, "-a", "-", "-o", "-", "--json", marker=marker,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = communicate(proc, 300, wav_bytes(1.3))
    assert proc.returncode == 0, err.decode()
    assert len(out) % TS_PACKET == 0 and out[::TS_PACKET] == b"\x47" * (len(out) // TS_PACKET)
    video = tmp_path / "out.ts"
    video.write_bytes(out)
    info = probe_media(video)
    assert info.n_frames == 33  # round(1.3 * 25)
    assert (info.video_codec, info.pix_fmt, info.audio_codec) == ("h264", "yuv420p", "aac")
    assert info.audio_duration == pytest.approx(1.3, abs=0.15)  # + AAC priming in MPEG-TS
    assert '"output": "stdout"' in err.decode()  # the report went to stderr
    assert processes_with(marker) == []


def test_video_bytes_leave_stdout_before_the_input_pipe_closes(tmp_path):
    marker = uuid.uuid4().hex
    proc = start(
        *RENDER, *SMALL, "-a", "-", "--audio-format", "s16le", "-o", "-", "--quiet",
        marker=marker, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    received = bytearray()
    first = threading.Event()

    def read() -> None:
        while data := proc.stdout.read1(65536):
            received.extend(data)
            first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    audio = s16le_bytes(3.0)
    proc.stdin.write(audio[: len(audio) // 2])  # 1.5 s: enough for chunks 0..2
    proc.stdin.flush()
    assert first.wait(timeout=180), "no video on stdout while the input was still open"
    assert received[:1] == b"\x47"
    proc.stdin.write(audio[len(audio) // 2 :])
    proc.stdin.close()
    proc.wait(timeout=300)
    reader.join(timeout=30)
    assert proc.returncode == 0, proc.stderr.read().decode()
    (tmp_path / "out.ts").write_bytes(bytes(received))
    assert probe_media(tmp_path / "out.ts").n_frames == 75


def test_closed_stdout_ends_with_one_line_exit_141_and_no_process(tmp_path):
    audio = tmp_path / "long.wav"
    audio.write_bytes(wav_bytes(20.0))
    marker = uuid.uuid4().hex
    read_end, write_end = os.pipe()
    proc = start(
        *RENDER, *SMALL, "-a", str(audio), "-o", "-", "--quiet", marker=marker,
        stdout=write_end, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(write_end)
    with os.fdopen(read_end, "rb") as player:
        assert player.read(TS_PACKET)[:1] == b"\x47"  # it is streaming; now the player quits
    _, err = communicate(proc, timeout=120)
    assert proc.returncode == 141, err
    assert "closed the pipe" in one_error_line(err)
    assert processes_with(marker) == []


def test_an_ffmpeg_error_ends_the_audio_pipe_so_ffmpeg_can_exit(tmp_path):
    """The hang behind a closed stdout (seen once in ~50 runs): ffmpeg, its output failed,
    stopped reading video and waited for its audio reader, blocked in a read of a pipe we fed
    only between video writes, while our video write waited for ffmpeg. Once ffmpeg has
    logged an error the audio thread closes the pipe (the reader sees the end) and says so."""
    read_fd, write_fd = os.pipe()
    log = tmp_path / "ffmpeg-stderr"
    log.write_bytes(b"")
    with log.open("rb") as f:
        pump = _AudioPump(write_fd, os.dup(f.fileno()))
    pump.start()
    pump.pending.put(b"\x00" * 64)
    assert os.read(read_fd, 64) == b"\x00" * 64
    pump.join(timeout=5 * ERROR_POLL_S)
    assert pump.is_alive() and pump.error is None  # no error: it waits for more audio
    log.write_bytes(b"av_interleaved_write_frame(): Broken pipe\n")
    pump.join(timeout=30)
    assert not pump.is_alive() and "ffmpeg reported an error" in str(pump.error)
    assert os.read(read_fd, 1) == b""  # end of file: ffmpeg's audio reader returns
    os.close(read_fd)


def test_ts_file_and_hls_segments(tmp_path):
    wav = tmp_path / "talk.wav"
    wav.write_bytes(wav_bytes(2.6))
    ts = tmp_path / "out.ts"
    hls = tmp_path / "hls"
    for output in (["-o", str(ts)], ["--segments", str(hls)]):
        proc = start(*RENDER, *SMALL, "-a", str(wav), *output, "--quiet", marker="x",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        out, err = communicate(proc, 300)
        assert proc.returncode == 0 and out == "", err
    assert probe_media(ts).n_frames == 65
    playlist = (hls / "index.m3u8").read_text()
    segments = sorted(hls.glob("seg*.ts"))
    assert "#EXT-X-ENDLIST" in playlist and len(segments) == 2  # 2 s segments of 2.6 s
    assert all(seg.name in playlist for seg in segments)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(seg.read_bytes() for seg in segments))
    assert probe_media(joined).n_frames == 65


@pytest.mark.parametrize(
    ("stdin", "flags", "expected"),
    [
        (b"not audio at all " * 100, ["--audio-format", "wav"], "is not a WAV stream"),
        (b"not audio at all " * 100, [], "cannot decode agent audio stdin as audio"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", [], "WAV header"),
        (b"", ["--audio-format", "s16le"], "ended before any audio arrived"),
        (b"\x00" * 100, ["--audio-format", "s16le", "--audio-rate", "0"], "--audio-rate 0"),
        (b"\x00" * 100, ["--audio-format", "no such!"], "--audio-format 'no such!'"),
        (b"\x00" * 100, ["--audio-format", "nosuchformat"], "cannot decode"),
    ],
    ids=["not-wav", "garbage", "truncated-wav", "empty", "rate-0", "bad-name", "unknown-name"],
)
def test_bad_stream_formats_fail_with_one_line(tmp_path, stdin, flags, expected):
    marker = uuid.uuid4().hex
    out = tmp_path / "out.ts"
    proc = start(*RENDER, *SMALL, "-a", "-", *flags, "-o", str(out), marker=marker,
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    _, err = communicate(proc, 120, stdin)
    line = one_error_line(err.decode())
    assert proc.returncode == 2 and expected in line, line
    assert not out.exists() and processes_with(marker) == []


def test_a_fifo_user_track_with_stdin_agent_renders_both(tmp_path):
    fifo = tmp_path / "user.fifo"
    os.mkfifo(fifo)
    user = io.BytesIO()
    wave, rate = sf.read(EXAMPLES / "user.wav", dtype="float32")
    sf.write(user, wave[: 2 * rate], rate, format="WAV", subtype="PCM_16")

    def feed_fifo() -> None:
        with open(fifo, "wb") as f:
            f.write(user.getvalue())

    threading.Thread(target=feed_fifo, daemon=True).start()
    proc = start(*RENDER, *SMALL, "-a", "-", "-u", str(fifo), "-o", "-", "--quiet", marker="x",
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out, err = communicate(proc, 300, wav_bytes(1.5))
    assert proc.returncode == 0, err.decode()
    (tmp_path / "out.ts").write_bytes(out)
    assert probe_media(tmp_path / "out.ts").n_frames == 50  # the longer track: 2 s


# ---- audio in: the streamed path equals the file path ---------------------------------------


def pieces(wave: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(wave):
        n = int(rng.integers(1, 5000))
        yield wave[i : i + n]
        i += n


@pytest.mark.parametrize("length", [120000, 12345, 640 * 20 + 320, 640 * 20 + 319, 700])
def test_streamed_mel_features_equal_the_file_features(length):
    wave = load_audio(EXAMPLES / "agent.wav")[:length]
    mel = MelFeatures(16, 2)
    stream = StreamingFeatures(mel)
    got = []
    for piece in pieces(wave, length):
        stream.push(piece)
        got.append(stream.take())
        assert len(stream.samples.data) < 5000 + 3 * 640  # a bounded window, not the track
    stream.end()
    got.append(stream.take())
    expected = mel(wave)
    assert torch.cat(got).shape == expected.shape
    torch.testing.assert_close(torch.cat(got), expected, atol=1e-5, rtol=0)


def test_windowed_smoother_equals_smooth_mask_on_random_masks():
    rng = np.random.default_rng(0)
    for trial in range(500):
        runs = rng.random(int(rng.integers(1, 80))) < rng.uniform(0.1, 0.9)
        mask = np.repeat(runs, rng.integers(1, 15, len(runs)))
        gap, talk = [(0.5, 0.2), (0.2, 0.2)][trial % 2]
        smoother = WindowedSmoother(gap, talk)
        got = [smoother.push(mask[i : i + 7]) for i in range(0, len(mask), 7)]
        got.append(smoother.push(np.zeros(0, bool), final=True))
        assert np.array_equal(np.concatenate(got), smooth_mask(mask, gap, talk)), trial


class FakeStream:
    """An AudioStream stand-in handing out fixed pieces (what the pipe would deliver)."""

    def __init__(self, wave: np.ndarray, seed: int) -> None:
        self.blocks = list(pieces(wave, seed))

    def read(self, timeout=None):
        return self.blocks.pop(0) if self.blocks else None

    def close(self) -> None:
        pass


@pytest.mark.parametrize("window", [AudioWindow(), AudioWindow(24, 2)])
def test_live_feed_gives_the_file_paths_windows_and_every_sample(window):
    from streamavatar_cli.audio.online import CausalLoudness
    from streamavatar_cli.pipeline.live import LiveFeed

    raw = sf.read(EXAMPLES / "agent.wav", dtype="float32")[0][: 16000 * 3 + 123]
    normalised = CausalLoudness()(raw, final=True)  # block-wise, so pieces give the same
    mel = MelFeatures(16, 2)
    expected = mel(normalised)
    feed = LiveFeed(mel, FakeStream(raw, 1), None, chunk_frames=3, rule="talk", window=window)
    audio, index = [], 0
    while (chunk := feed.chunk(index)) is not None:
        audio.append(chunk.audio)
        if index > 0:
            want = latent_windows(expected, 3, window, first=3 * (index - 1) + 1)[None]
            torch.testing.assert_close(chunk.talk, want, atol=1e-5, rtol=0)
            assert float(chunk.listen.abs().max()) == 0.0  # one track: all talk
        if chunk.last:
            break
        index += 1
    assert index == 7  # 76 frames -> 19 latents -> 7 chunks
    np.testing.assert_allclose(np.concatenate(audio), normalised, atol=1e-7)


def test_online_vad_mask_follows_the_file_mask_of_a_conversation():
    """Silero's streaming form + the windowed smoothers, fed 0.2 s at a time, against the
    whole-file `compute_speak_mask` on the example two-speaker conversation."""
    pytest.importorskip("silero_vad")
    from streamavatar_cli.audio import compute_speak_mask
    from streamavatar_cli.pipeline.live import OnlineMask

    agent = load_audio(EXAMPLES / "conversation-agent.wav")
    user = load_audio(EXAMPLES / "conversation-user.wav")
    n = max(len(agent), len(user))
    tracks = [np.pad(t, (0, n - len(t))) for t in (agent, user)]
    expected = compute_speak_mask(agent, user)
    online, parts, step = OnlineMask("vad-two"), [], SR // 5
    for a in range(0, n, step):
        b = min(n, a + step)
        parts.append(online.push(tracks[0][a:b], tracks[1][a:b], b, final=b == n))
    got = np.concatenate(parts)
    assert len(got) == len(expected) == 400
    assert 0.3 < expected.mean() < 0.7  # a real conversation: both speak
    assert (got == expected).mean() >= 0.98  # 399 of 400 frames on this machine


def test_realtime_paces_video_to_the_wall_clock(tmp_path):
    """--realtime: frame n leaves no earlier than n / 25 s after the first, so 2 s of video take
    at least the 2 s they play for (random-tiny alone makes them in a fraction of that)."""
    import time

    out, wav = tmp_path / "paced.ts", tmp_path / "two-seconds.wav"
    wav.write_bytes(wav_bytes(2.0))
    t0 = time.perf_counter()
    proc = start(
        *RENDER, *SMALL, "-a", str(wav), "-o", str(out),
        "--realtime", "--json", marker=uuid.uuid4().hex,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    report, err = communicate(proc, 300)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, err.decode()
    assert probe_media(out).n_frames == 50
    assert wall >= 49 / 25, f"2 s of video were sent in {wall:.2f} s"
    assert json.loads(report)["settings"]["realtime"] is True


@pytest.mark.parametrize("window", [AudioWindow(), AudioWindow(20, 2), AudioWindow(12, 0)])
def test_frame_store_windows_equal_latent_windows(window):
    feats = torch.randn(40, 2, 3)
    store = _FrameStore(window)
    store.append(feats, -feats)
    for first in (1, 4, 7, 10):
        talk, listen = store.windows(first, 3, last_frame=39)
        torch.testing.assert_close(talk[0], latent_windows(feats, 3, window, first=first))
        torch.testing.assert_close(listen[0], latent_windows(-feats, 3, window, first=first))


FEED_MEMORY_CHILD = """
import sys
from pathlib import Path
import numpy as np
from streamavatar_cli.audio import MelFeatures
from streamavatar_cli.config import AudioWindow
from streamavatar_cli.pipeline.live import LiveFeed

def hwm_kb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

class Endless:  # speech-like blocks made on the fly, as a pipe would deliver them
    def __init__(self, seconds):
        self.left, self.t = int(seconds * 16000), 0
    def read(self, timeout=None):
        if self.left <= 0:
            return None
        n = min(4096, self.left)
        t = (self.t + np.arange(n)) / 16000
        self.t += n
        self.left -= n
        return (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(6 * np.pi * t))).astype(np.float32)
    def close(self):
        pass

minutes = [int(m) for m in sys.argv[1:]]
feed = LiveFeed(MelFeatures(16, 2), Endless(max(minutes) * 60), None, chunk_frames=3, rule="talk",
                window=AudioWindow())
index, marks = 0, iter(minutes)
mark = next(marks)
while (chunk := feed.chunk(index)) is not None:
    if index * 0.48 >= mark * 60:
        print(mark, hwm_kb(), flush=True)
        mark = next(marks, 10**9)
    if chunk.last:
        break
    index += 1
print(max(minutes), hwm_kb(), flush=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_60_minute_stream_holds_flat_memory():
    """The input side of a live render (features, mask, buffers) for 60 minutes of audio:
    peak RSS at 60 min within 10 % of that at 5 min (the model side is test_long_run's)."""
    proc = subprocess.run(
        [sys.executable, "-c", FEED_MEMORY_CHILD, "5", "60"],
        capture_output=True, text=True, timeout=3600, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    peaks = dict(tuple(map(int, line.split())) for line in proc.stdout.split("\n") if line)
    print(f"peak RSS: 5 min {peaks[5] / 1024:.1f} MB, 60 min {peaks[60] / 1024:.1f} MB")
    assert peaks[60] <= 1.1 * peaks[5], peaks
