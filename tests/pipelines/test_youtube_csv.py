"""youtube-csv: yt-dlp fetches from a loopback server, PyAV cuts the 10-s window."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.build import BuildConfig, build_dataset
from pipelines.manifest import load_dataset
from pipelines.media import decode_clip
from pipelines.segments import SegmentSpec
from pipelines.sources.youtube_csv import YoutubeCsvSource, read_clip_list

pytest.importorskip("yt_dlp", reason="yt-dlp is the optional 'youtube' extra (installed by the dev extra)")


def test_csv_forms(tmp_path) -> None:
    vgg = tmp_path / "vggsound.csv"
    vgg.write_text("---g-f_I2yQ,1,people marching,test\nabc,30,dog barking,train\n")
    assert read_clip_list(vgg) == [
        {"youtube_id": "---g-f_I2yQ", "start_s": 1.0, "label": "people marching", "split": "test"},
        {"youtube_id": "abc", "start_s": 30.0, "label": "dog barking", "split": "train"},
    ]
    ks = tmp_path / "ks.csv"
    ks.write_text("label,youtube_id,time_start,time_end,split\nplaying drums,xyz,12,22,validation\n")
    assert read_clip_list(ks) == [{"youtube_id": "xyz", "start_s": 12.0, "label": "playing drums", "split": "val"}]
    bad = tmp_path / "bad.csv"
    bad.write_text("abc,notanumber,x,train\n")
    with pytest.raises(ValueError, match="line 1"):
        read_clip_list(bad)


@pytest.mark.slow
def test_fetch_cut_and_failure_row(http_server, clip_maker, tmp_path) -> None:
    # a 14-s source video at 10 fps whose frame i has brightness 2*i, and a 440 Hz tone
    src = clip_maker(tmp_path / "src.mp4", seconds=14.0, size=64, fps=10)
    http_server.files["/v/vid_ok.mp4"] = src.read_bytes()
    listing = tmp_path / "list.csv"
    listing.write_text("vid_ok,3,tone,train\nvid_gone,0,tone,test\n")
    cfg = YoutubeCsvSource(csv=listing, url_template=http_server.url("/v/{youtube_id}.mp4"))
    summary = build_dataset(BuildConfig(source=cfg, out=tmp_path / "out", workers=2))
    assert summary.clips == 1 and summary.failures == 1
    ds = load_dataset(tmp_path / "out")
    row = ds.clips.iloc[0]
    assert row["clip_id"] == "vid_ok_000003" and row["relpath"] == "videos/vid_ok_000003.mp4"
    assert row["duration_s"] == pytest.approx(10.0, abs=0.15) and row["has_audio"]
    fail = ds.failures.iloc[0]
    assert (fail["clip_id"], fail["stage"], fail["error"]) == ("vid_gone_000000", "download", "download_failed")
    assert "/v/vid_gone.mp4" in fail["message"]
    # the cut starts at 3 s of the source: segment 0's centre (0.5 s) is source frame 35 (brightness 70)
    clip = decode_clip(ds.clip_path("vid_ok_000003"), SegmentSpec(frame_size=32))
    assert clip.segment_mask.all()
    assert abs(float(clip.frames[0].mean()) - 70) < 6 and abs(float(clip.frames[9].mean()) - 250) < 6
    spectrum = np.abs(np.fft.rfft(clip.audio[4]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 2  # 1-s segment: bin = Hz
    # already-cut clips are not fetched again
    n = len(http_server.requests)
    build_dataset(BuildConfig(source=cfg, out=tmp_path / "out"))
    assert all(p != "/v/vid_ok.mp4" for p, _ in http_server.requests[n:])
