"""Choices of the command line and the demo that differ from the library's defaults, in one place."""

from __future__ import annotations

__all__ = ["FAST_EXPLAINERS", "STEP_SECONDS_PER_ITERATION"]

#: What ``wherewhen evaluate`` and the demo score unless told otherwise: the explainers that take
#: seconds, not minutes (STEP is on request: ``--explainers attention,attention_v,gradcam,step``).
FAST_EXPLAINERS: tuple[str, ...] = ("attention", "attention_v", "gradcam")

#: STEP's cost on one clip per optimisation step on a 2-core CPU (168 s for 300 steps, issue 16),
#: for the estimate printed before it starts; a GPU is much faster, so the estimate is an upper bound there.
STEP_SECONDS_PER_ITERATION = 0.56
