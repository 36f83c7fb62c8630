"""Probing and decoding real media with decord in a killable child process."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.media import ClipDecoder, MediaError, decode_clip, probe
from pipelines.segments import SegmentSpec, frame_times, segment_mask


def test_frame_times_centres_and_even_spacing() -> None:
    spec = SegmentSpec(num_segments=3, segment_s=2.0, frames_per_segment=2)
    assert np.allclose(frame_times(spec), [[0.5, 1.5], [2.5, 3.5], [4.5, 5.5]])
    assert np.allclose(frame_times(SegmentSpec(num_segments=2))[:, 0], [0.5, 1.5])
    assert segment_mask(SegmentSpec(), 5.28).tolist() == [True] * 5 + [False] * 5


def test_probe_real_media(media_files) -> None:
    info = probe(media_files.bigbuckbunny)
    assert (info.width, info.height, info.num_frames) == (1280, 720, 132)
    assert info.fps == pytest.approx(25.0)
    assert info.duration_s == pytest.approx(5.28, abs=0.05)
    assert info.has_audio and info.audio_sample_rate == 48000
    bikes = probe(media_files.bikes)
    assert not bikes.has_audio and bikes.audio_sample_rate is None
    assert bikes.duration_s == pytest.approx(10.0, abs=0.1)


def test_decode_short_clip_is_padded_not_stretched(media_files) -> None:
    spec = SegmentSpec(frame_size=64, frames_per_segment=2)
    clip = decode_clip(media_files.bigbuckbunny, spec)
    assert clip.frames.shape == (10, 2, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (10, 16000) and clip.audio.dtype == np.float32
    assert clip.has_audio and clip.duration_s == pytest.approx(5.28, abs=0.05)
    assert clip.segment_mask.tolist() == [True] * 5 + [False] * 5
    # real content inside the clip, exact zeros in the padding
    assert (clip.frames[:5].reshape(5, -1).std(axis=1) > 5).all()
    assert not clip.frames[5:].any() and not clip.audio[5:].any()
    assert (np.abs(clip.audio[:5]).mean(axis=1) > 1e-3).all()
    assert np.abs(clip.audio).max() <= 1.0
    # the two frames of a segment are different moments of the video
    assert not np.array_equal(clip.frames[0, 0], clip.frames[0, 1])


def test_decode_matches_direct_decord_read(media_files) -> None:
    """The child returns exactly the frame decord gives for the segment centre."""
    import decord

    spec = SegmentSpec(num_segments=3, frame_size=32)
    clip = decode_clip(media_files.bigbuckbunny, spec)
    vr = decord.VideoReader(str(media_files.bigbuckbunny), width=32, height=32)
    # centre of segment 1 is 1.5 s -> frame 37 at 25 fps
    assert np.array_equal(clip.frames[1, 0], vr[37].asnumpy())


def test_decode_no_audio_gives_silence(media_files) -> None:
    clip = decode_clip(media_files.bikes, SegmentSpec(frame_size=32))
    assert not clip.has_audio
    assert clip.segment_mask.all()
    assert not clip.audio.any()
    assert clip.frames.any()


@pytest.mark.parametrize(
    ("name", "error"),
    [("truncated", "truncated"), ("empty", "empty_file"), ("text", "not_video")],
)
def test_broken_files_raise_actionable_errors(media_files, name: str, error: str) -> None:
    path = getattr(media_files, name)
    with ClipDecoder(timeout_s=30) as dec:
        with pytest.raises(MediaError) as exc:
            dec.probe(path)
        assert exc.value.error == error
        assert str(path) in exc.value.message
        # the same child keeps serving good files after a failure
        assert dec.probe(media_files.bikes).num_frames == 250


def test_size_decord_cannot_resize_to_is_a_config_error_not_a_bad_file(media_files) -> None:
    with pytest.raises(ValueError, match="frame_size=48"):
        decode_clip(media_files.bikes, SegmentSpec(num_segments=1, frame_size=48))


def test_missing_file(tmp_path) -> None:
    with pytest.raises(MediaError) as exc:
        probe(tmp_path / "nope.mp4")
    assert exc.value.error == "missing_file"


def test_timeout_kills_and_restarts_child(media_files, tmp_path) -> None:
    """A decode that cannot finish in time is killed; the next call gets a fresh child."""
    dec = ClipDecoder(timeout_s=0.001, seconds_per_mb=0.0)
    try:
        with pytest.raises(MediaError) as exc:
            dec.decode(media_files.bigbuckbunny, SegmentSpec(frame_size=32))
        assert exc.value.error == "timeout"
        assert dec.restarts == 1
        dec.timeout_s = 60
        clip = dec.decode(media_files.bigbuckbunny, SegmentSpec(frame_size=32))
        assert clip.segment_mask.sum() == 5
    finally:
        dec.close()


def test_the_time_limit_grows_with_the_file(tmp_path) -> None:
    """decord decodes a file's whole audio track: a long good video must not be called damaged."""
    small, big = tmp_path / "small.mp4", tmp_path / "big.mp4"
    small.write_bytes(b"\0" * 1000)
    with big.open("wb") as f:
        f.truncate(65_000_000)  # a 20-min 360p video's size
    dec = ClipDecoder(timeout_s=60)
    assert dec.timeout_for(small) == pytest.approx(60.0, abs=0.01)
    assert dec.timeout_for(big) == pytest.approx(60.0 + 65 * 0.5)
    assert dec.timeout_for(tmp_path / "missing.mp4") == 60.0


def test_crashed_child_is_reported_and_replaced(media_files) -> None:
    with ClipDecoder(timeout_s=60) as dec:
        dec.probe(media_files.bikes)
        dec._proc.kill()  # the child dies between calls (e.g. the OOM killer)
        dec._proc.wait()
        # a dead child is noticed before sending and replaced
        assert dec.probe(media_files.bikes).has_audio is False


def test_child_dying_mid_call_is_a_crash_error(media_files) -> None:
    import threading

    with ClipDecoder(timeout_s=120) as dec:
        dec.probe(media_files.bikes)
        victim = dec._proc
        timer = threading.Timer(0.1, victim.kill)  # killed while decoding (open + 132 frames + audio take far longer)
        timer.start()
        try:
            with pytest.raises(MediaError) as exc:
                dec.decode(media_files.bigbuckbunny, SegmentSpec(frame_size=256, frames_per_segment=25))
        finally:
            timer.cancel()
        assert exc.value.error == "crashed" and dec.restarts == 1
        assert dec.decode(media_files.bikes, SegmentSpec(num_segments=2, frame_size=32)).frames.shape == (2, 1, 32, 32, 3)


def test_decoded_clips_come_back_through_shared_memory_that_is_released(media_files) -> None:
    from multiprocessing import shared_memory

    small, big = SegmentSpec(num_segments=2, frame_size=32), SegmentSpec(num_segments=5, frame_size=64, frames_per_segment=3)
    with ClipDecoder() as dec:
        first = dec.decode(media_files.bigbuckbunny, small)
        name_small = dec._shm.name
        second = dec.decode(media_files.bigbuckbunny, big)      # a larger spec gets a larger block
        name_big = dec._shm.name
        again = dec.decode(media_files.bigbuckbunny, small)     # the larger block serves smaller clips
        assert dec._shm.name == name_big != name_small
    assert dec._shm is None
    for name in (name_small, name_big):                         # both blocks were unlinked
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name=name)
    # results are copies: later decodes into the same block do not change earlier clips
    assert np.array_equal(first.frames, again.frames) and np.array_equal(first.audio, again.audio)
    assert second.frames.shape == (5, 3, 64, 64, 3) and second.audio.shape == (5, 16000)
    assert np.array_equal(first.frames, decode_clip(media_files.bigbuckbunny, small).frames)


def test_decoder_works_inside_a_daemonic_process(media_files) -> None:
    """Dask workers are daemonic processes; the decoder must still start its child there."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_decode_in_daemon, args=(str(media_files.bikes), q), daemon=True)
    p.start()
    result = q.get(timeout=120)
    p.join(timeout=30)
    assert result == (2, 1, 32, 32, 3)


def _decode_in_daemon(path: str, q) -> None:
    try:
        q.put(decode_clip(path, SegmentSpec(num_segments=2, frame_size=32)).frames.shape)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        q.put(repr(exc))


def test_clip_layout_places_frames_then_audio_without_overlap() -> None:
    from pipelines.media.protocol import ClipLayout

    spec = SegmentSpec(num_segments=3, frame_size=32, frames_per_segment=2, audio_rate=8000)
    layout = ClipLayout.for_spec(spec)
    assert layout.frames_shape == (3, 2, 32, 32, 3) and layout.audio_shape == (3, 8000)
    assert layout.nbytes == 3 * 2 * 32 * 32 * 3 + 4 * 3 * 8000
    buf = bytearray(layout.nbytes + 7)  # a larger block serves a smaller clip
    frames, audio = layout.views(memoryview(buf))
    frames[:] = 255
    audio[:] = 0.5
    assert (frames == 255).all() and (audio == 0.5).all()  # writing one array did not touch the other
    assert bytes(buf[layout.nbytes:]) == b"\x00" * 7


def test_child_errors_are_diagnosed_from_the_file_and_the_message(media_files, tmp_path) -> None:
    from pipelines.media.diagnose import diagnose

    resize = diagnose(media_files.bikes, "DECORDError: DECORDArrayCopyFromTo failed", frame_size=24)
    assert isinstance(resize, ValueError) and not isinstance(resize, MediaError) and "frame_size=24" in str(resize)
    # the same text from a probe is about the file, not the configuration
    assert isinstance(diagnose(media_files.bikes, "DECORDError: DECORDArrayCopyFromTo failed"), MediaError)
    assert diagnose(media_files.truncated, "DECORDError: whatever").error == "truncated"
    assert diagnose(media_files.empty, "").error == "empty_file"
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x01\x02\x03\x00" * 64)
    got = diagnose(odd, "DECORDError: Error reading\nmore")
    assert got.error == "not_video" and str(odd) in got.message
    mkv = tmp_path / "bad.mkv"
    mkv.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 64)
    got = diagnose(mkv, "Traceback\nDECORDError: Invalid data found when processing input")
    assert got.error == "corrupt" and "Invalid data found" in got.message


def test_the_decoder_child_is_the_protocol_module(media_files) -> None:
    import psutil

    from pipelines.media.protocol import CHILD_MODULE

    with ClipDecoder() as dec:
        dec.probe(media_files.bikes)
        assert psutil.Process(dec.pid).cmdline()[-2:] == ["-m", CHILD_MODULE]


def _write_mp4(path, seconds: int, video: bool = True, audio: bool = True, rate: int = 8000) -> None:
    """A valid mp4 (PyAV): 32 px video at 1 fps and/or a mono AAC tone, ``seconds`` long."""
    import av

    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=1) if video else None
        a = c.add_stream("aac", rate=rate, layout="mono") if audio else None
        if v is not None:
            v.width = v.height = 32
            v.pix_fmt = "yuv420p"
            for i in range(seconds):
                frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i % 255, np.uint8), format="rgb24")
                frame.pts = i
                for packet in v.encode(frame):
                    c.mux(packet)
            for packet in v.encode(None):
                c.mux(packet)
        if a is not None:
            chunk = (0.2 * np.sin(2 * np.pi * 220 * np.arange(rate * 10) / rate)).astype(np.float32).reshape(1, -1)
            for k in range(seconds // 10):
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = rate, k * chunk.shape[1]
                for packet in a.encode(frame):
                    c.mux(packet)
            for packet in a.encode(None):
                c.mux(packet)


@pytest.mark.slow
def test_probing_a_20_minute_video_decodes_one_second_of_its_audio(tmp_path) -> None:
    from pipelines.media.child import PROBE_AUDIO_S, probe_audio

    long = tmp_path / "twenty_minutes.mp4"
    _write_mp4(long, 1200)
    rate, duration, decoded = probe_audio(str(long))
    assert rate == 8000 and duration == pytest.approx(1200.0, abs=0.5)
    assert decoded <= PROBE_AUDIO_S + 0.2   # the header gives the length; only the first second is decoded
    info = probe(long, timeout_s=60)
    assert info.has_audio and info.audio_sample_rate == 8000
    assert info.duration_s == pytest.approx(1200.0, abs=1.0) and info.audio_duration_s == pytest.approx(1200.0, abs=0.5)


def test_an_audio_only_mp4_is_named_as_such(tmp_path) -> None:
    sound = tmp_path / "soundtrack.mp4"
    _write_mp4(sound, 10, video=False)
    for call in (lambda d: d.probe(sound), lambda d: d.decode(sound, SegmentSpec(frame_size=32))):
        with ClipDecoder() as dec, pytest.raises(MediaError) as err:
            call(dec)
        assert err.value.error == "no_video_stream"
        assert str(sound) in err.value.message and "no video stream" in err.value.message
        assert "audio (aac, 8000 Hz)" in err.value.message and "wanted index" not in err.value.message
