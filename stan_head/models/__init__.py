"""The heads: STAN and its baselines behind one interface (``Head.forward -> HeadOutput``), registered by name."""

from __future__ import annotations

from stan_head.models.ave_att import AVEAtt
from stan_head.models.base import Head, HeadOptions, HeadOutput, HeadSizes
from stan_head.models.late_fusion import LateFusion
from stan_head.models.registry import HEAD_NAMES, HEADS, HeadConfig, HeadName, HeadSpec, build_head
from stan_head.models.stan import STAN

__all__ = [
    "AVEAtt", "HEADS", "HEAD_NAMES", "Head", "HeadConfig", "HeadName", "HeadOptions", "HeadOutput", "HeadSizes",
    "HeadSpec", "LateFusion", "STAN", "build_head",
]
