"""Named parameter sets of the synthetic source: ``easy``, ``hard`` and the held-out presets.

A preset fills the fields of :class:`pipelines.sources.synthetic_config.SyntheticSource` that
the caller did not give; explicit fields always win. ``easy`` fills nothing: the field defaults
are the generator as it was before presets existed, byte for byte.

- ``easy``: every class has its own sound (the sound alone names the class), 1-2 smaller silent
  distractors, a smooth background, loud events of 3+ s.
- ``hard``: vision needed. Sound families are shared by pairs of classes, 2-3 silent distractors
  of *other* pairs as large as the sounding object, textured backgrounds, smaller objects,
  2-4 s events, 4-10 dB SNR, an occluder in some clips.
- ``heldout_wide`` and ``heldout_clutter``: the same class construction as ``hard`` (same
  classes, same shared sounds) with every rendering parameter changed: frame size and aspect,
  fps, audio rate, background kind, object scale, distractor count, event length, SNR,
  occlusion and off-screen rates.

**NEVER TUNE ON THE HELD-OUT PRESETS.** They exist to measure whether what was developed on
``hard`` generalises. Choosing a model, a loss, a threshold or a hyper-parameter by its score on
``heldout_wide`` or ``heldout_clutter`` turns them into training data and their figures into
over-estimates. Develop on ``hard`` (its train/val splits); evaluate on the held-out presets once.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["EASY_MIN_SNR_DB", "HELD_OUT_PRESETS", "PRESETS"]

#: The easy generator's quietest event: RMS 0.125 over the 0.02 noise floor (≈ 15.9 dB).
EASY_MIN_SNR_DB = 20 * math.log10(0.125 / 0.02)

#: Preset name → the field values it fills in (fields not named keep their defaults).
PRESETS: dict[str, dict[str, Any]] = {
    "easy": {},
    "hard": {
        "width": 176, "height": 132, "fps": 12, "audio_rate": 16000, "background": "texture",
        "min_scale": 0.18, "max_scale": 0.26, "min_distractor_scale": None, "max_distractor_scale": None,
        "min_distractors": 2, "max_distractors": 3, "min_event_s": 2, "max_event_s": 4,
        "min_snr_db": 4.0, "max_snr_db": 10.0, "occlusion_fraction": 0.2, "offscreen_fraction": 0.2,
        "shared_sounds": True,
    },
    "heldout_wide": {
        "width": 256, "height": 144, "fps": 24, "audio_rate": 44100, "background": "noise",
        "min_scale": 0.26, "max_scale": 0.34, "min_distractor_scale": None, "max_distractor_scale": None,
        "min_distractors": 1, "max_distractors": 2, "min_event_s": 5, "max_event_s": 8,
        "min_snr_db": 11.0, "max_snr_db": 16.0, "occlusion_fraction": 0.0, "offscreen_fraction": 0.1,
        "shared_sounds": True,
    },
    "heldout_clutter": {
        "width": 144, "height": 192, "fps": 15, "audio_rate": 22050, "background": "moving",
        "min_scale": 0.13, "max_scale": 0.18, "min_distractor_scale": None, "max_distractor_scale": None,
        "min_distractors": 4, "max_distractors": 5, "min_event_s": 3, "max_event_s": 6,
        "min_snr_db": 0.0, "max_snr_db": 4.0, "occlusion_fraction": 0.5, "offscreen_fraction": 0.3,
        "shared_sounds": True,
    },
}

#: Presets for evaluation only (see the module docstring).
HELD_OUT_PRESETS: tuple[str, ...] = ("heldout_wide", "heldout_clutter")
