"""Golden bytes: a tiny synthetic build must give the committed sha256 on every machine.

Same-machine comparisons cannot see a CPU- or library-dependent encoder (the AVX-512 kernels
of libx264 once gave other bytes on some x86-64 machines than on others). This test compares
with constants recorded in ``golden_synthetic.json``, so another CPU kind or another version of
PyAV / pyarrow / numpy that produces other bytes fails here, loudly, instead of silently
minting a new dataset fingerprint.

Re-record only on purpose (a deliberate change of encoder setting or of pinned library
version), and say so in the commit: ``WHEREWHEN_RECORD_GOLDEN=1 python -m pytest tests/pipelines/test_golden.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pipelines.build import BuildConfig, build_dataset
from pipelines.encode import ENCODER_SETTING, encoder_identity
from pipelines.manifest import load_dataset
from pipelines.sources.synthetic import SyntheticSource

GOLDEN = Path(__file__).with_name("golden_synthetic.json")
SOURCE = SyntheticSource(clips=4, classes=2, seed=3, duration_s=3, size=64, fps=8)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digests(root: Path) -> dict[str, str]:
    files = sorted((root / "videos").glob("*.mp4")) + [root / n for n in ("manifest.parquet", "annotations.csv", "boxes.csv", "boxes.parquet")]
    return {p.relative_to(root).as_posix(): _sha(p) for p in files}


def test_tiny_synthetic_build_matches_the_committed_hashes(tmp_path: Path, clip_maker) -> None:
    summary = build_dataset(BuildConfig(source=SOURCE, out=tmp_path / "ds", workers=2))
    files = _digests(tmp_path / "ds")
    # the tests' own fixture clip (tests/pipelines/conftest.make_clip), whose bytes other tests compare
    files["fixture/make_clip.mp4"] = _sha(clip_maker(tmp_path / "fixture.mp4"))
    got = {"encoder_setting": ENCODER_SETTING, "source": SOURCE.model_dump(mode="json"),
           "files": files, "fingerprint": summary.fingerprint}
    if os.environ.get("WHEREWHEN_RECORD_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps({**got, "recorded_with": encoder_identity()}, indent=2, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert got["source"] == want["source"] and got["encoder_setting"] == want["encoder_setting"], (
        "the golden build's parameters changed; re-record on purpose (see this module's docstring)")
    differ = sorted(k for k in want["files"] if got["files"].get(k) != want["files"][k])
    assert not differ, (
        f"{differ} differ from {GOLDEN.name} (recorded with {want['recorded_with']}, this machine has "
        f"{encoder_identity()}): this CPU or these library versions encode other bytes, so dataset "
        "fingerprints would not match other machines'. See README 'Guarantees'.")
    assert got["fingerprint"] == want["fingerprint"]
    card = load_dataset(tmp_path / "ds").card
    assert card.media_encoder is not None and card.media_encoder["setting"] == ENCODER_SETTING


def test_encoder_setting_enters_the_fingerprint(tmp_path: Path, monkeypatch) -> None:
    """Another encoder setting with the same videos → another manifest.parquet → another fingerprint."""
    a = build_dataset(BuildConfig(source=SOURCE.model_copy(update={"clips": 2}), out=tmp_path / "a", workers=1))
    import pipelines.build as build_mod

    monkeypatch.setattr(build_mod, "encoder_identity", lambda: {**encoder_identity(), "setting": ENCODER_SETTING + " (changed)"})
    b = build_dataset(BuildConfig(source=SOURCE.model_copy(update={"clips": 2}), out=tmp_path / "b", workers=1))
    assert _digests(tmp_path / "a")["videos/syn00000.mp4"] == _digests(tmp_path / "b")["videos/syn00000.mp4"]
    assert a.fingerprint != b.fingerprint


def test_frame_heights_that_are_not_multiples_of_four_encode(tmp_path: Path) -> None:
    """yuv420p's chroma planes have H/2 rows of W/2: a 162-px-high frame must encode and decode back."""
    import av
    import numpy as np

    from pipelines.encode import Mp4Writer

    with Mp4Writer(tmp_path / "x.mp4", 64, 162, 10, audio_rate=None) as w:
        for i in range(5):
            w.write_frame(np.full((162, 64, 3), 40 * i, np.uint8))
    with av.open(str(tmp_path / "x.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (162, 64, 3)
    assert abs(int(frames[4].mean()) - 160) <= 3
