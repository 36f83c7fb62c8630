"""Per-segment event labels and box normalisation for the store."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["segment_labels", "normalise_boxes", "boxes_frame", "BOX_DTYPES"]

#: The store's boxes.parquet: one row per (clip, segment) box, coordinates in [0, 1] of the frame.
BOX_DTYPES: dict[str, str] = {"clip_id": "str", "segment": "int32", "x0": "float64", "y0": "float64",
                              "x1": "float64", "y1": "float64"}


def segment_labels(
    num_segments: int, segment_s: float, label_idx: int, num_classes: int,
    event_start_s: float, event_end_s: float, segment_mask: np.ndarray | None = None,
) -> np.ndarray:
    """int16 (T,): ``label_idx`` where the segment is part of the event, ``num_classes`` (background) elsewhere.

    Segment t covers [t*segment_s, (t+1)*segment_s). It counts as event when it overlaps
    [event_start_s, event_end_s] by at least half a segment (AVE's integer-second annotations give
    exactly its ``labels_closs.h5``). Padded segments (``segment_mask`` False) are background.
    """
    t0 = np.arange(num_segments, dtype=np.float64) * segment_s
    overlap = np.clip(np.minimum(t0 + segment_s, event_end_s) - np.maximum(t0, event_start_s), 0.0, None)
    event = overlap >= 0.5 * segment_s - 1e-9
    if segment_mask is not None:
        event &= np.asarray(segment_mask, dtype=bool)
    return np.where(event, label_idx, num_classes).astype(np.int16)


def normalise_boxes(boxes: pd.DataFrame | None) -> pd.DataFrame | None:
    """Pixel boxes (clip_id, segment, x0, y0, x1, y1, width, height) -> [0, 1] of the frame, clipped."""
    if boxes is None:
        return None
    out = pd.DataFrame({"clip_id": boxes["clip_id"], "segment": boxes["segment"]})
    for a, d in (("x0", "width"), ("x1", "width"), ("y0", "height"), ("y1", "height")):
        out[a] = (boxes[a].astype("float64") / boxes[d].astype("float64")).clip(0.0, 1.0)
    return out[list(BOX_DTYPES)].astype(BOX_DTYPES).reset_index(drop=True)


def boxes_frame(records: list[dict] | None) -> pd.DataFrame | None:
    """Normalised boxes back from their records (``normalise_boxes(...).to_dict("records")``), same dtypes."""
    if records is None:
        return None
    return pd.DataFrame(records, columns=list(BOX_DTYPES)).astype(BOX_DTYPES)
