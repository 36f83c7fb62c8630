"""Your own folder through the command line as the README tells it (issue 16.5): other spellings of
``val`` accepted, an unknown split a failure row naming the allowed values, clips longer than the
segments warned about once per build with the option that reads them whole. Real encoded clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowtest_support import local_env, run_cli


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.encode import Mp4Writer

    root = tmp_path_factory.mktemp("own-data")
    (root / "videos").mkdir()
    lengths = {"long_a": 12.0, "long_b": 11.5, "dog_c": 4.0, "cat_d": 3.0, "cat_e": 3.0}
    for name, seconds in lengths.items():
        n = int(seconds * 10)
        with Mp4Writer(root / "videos" / f"{name}.mp4", 96, 64, 10, audio_rate=16000) as w:
            for i in range(n):
                w.write_frame(np.full((64, 96, 3), (7 * i) % 255, np.uint8))
            w.write_audio((0.1 * np.sin(np.arange(int(seconds * 16000)) * 0.05)).astype(np.float32)[None])
    (root / "annotations.csv").write_text("video_id,label,split\nlong_a,dog,Validation\nlong_b,cat,train\n"
                                          "dog_c,dog,dev\ncat_d,cat,train\ncat_e,cat,foo\n")
    return root


def test_own_folder_splits_and_long_clips(folder: Path, tmp_path: Path) -> None:
    env = local_env(tmp_path / "prefect-home")
    out = tmp_path / "ds"
    proc = run_cli(["dataset", "build", "folder", str(folder), "--out", str(out)], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), proc.stderr
    assert "2 of 4 clip(s) are longer than 10 s (up to 12.0 s)" in warnings[0]
    assert "--segment-num-segments 12" in warnings[0]

    manifest = pd.read_parquet(out / "manifest.parquet").set_index("clip_id")
    assert manifest.loc["long_a", "split"] == "val" and manifest.loc["dog_c", "split"] == "val"
    failures = pd.read_parquet(out / "failures.parquet")
    assert list(failures["clip_id"]) == ["cat_e"] and list(failures["error"]) == ["bad_split"]
    assert "'foo'" in failures["message"][0] and "validation/valid/dev" in failures["message"][0]

    info = run_cli(["dataset", "info", str(out)], env)
    assert info.returncode == 0, info.stderr
    assert "val: 2" in info.stdout and "cat_e [annotate/bad_split]" in info.stdout
