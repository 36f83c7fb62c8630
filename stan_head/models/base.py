"""The contract every head follows: configuration, output record and shared attention helpers.

All heads (registered in :mod:`stan_head.models.registry`) take the same inputs and return the
same :class:`HeadOutput`, so the trainer, the explainer and the evaluation code never special-case
a model. Shapes use B = batch, T = segments, H×W = spatial grid of the visual feature map,
Cv / Ca = visual / audio channels, K = classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class HeadOptions(BaseModel):
    """Architecture hyper-parameters a user chooses (the input sizes come from the store).

    ``d_model`` is the width both modalities are projected to; ``attn_dim`` the hidden width of
    the additive (tanh) attention scorers; ``hidden_dim`` the classifier MLP width (late fusion,
    ``ave_att`` and the per-segment classifiers); ``lstm_hidden`` the per-direction BiLSTM width of
    ``ave_att``; ``segment_head`` adds the per-segment classifier with a background class (K + 1
    outputs). STAN's spatial attention: ``attention_temperature`` τ divides its audio-visual
    agreement scores before the softmax over cells (smaller = sharper α), and
    ``attention_neighbourhood`` c weighs a cell's edge neighbours (c) and corner neighbours (c²)
    when the agreement is pooled over 3×3 neighbourhoods (0 = no pooling), and ``region_dropout`` is
    the dropout on each cell's normalised frozen feature in front of its region classifier (training
    only: the classifier that α is built from learns each class from the ~20 clips a small training
    split has of it, weakly, and without it memorises clip-specific cells; DESIGN.md "STAN head"), and
    ``attention_passes`` how often α is computed: with the audio's class scores, then with the fused
    ones of the pass before (1 = the single pass of earlier versions, which run cards without the
    field were trained with and load with).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    d_model: int = Field(64, ge=1, description="width both modalities are projected to")
    attn_dim: int = Field(32, ge=1, description="hidden width of the additive (tanh) attention scorers")
    hidden_dim: int = Field(128, ge=1, description="classifier MLP width (late fusion, ave_att, segment classifiers)")
    lstm_hidden: int = Field(64, ge=1, description="per-direction BiLSTM width of ave_att")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout on the projected features")
    segment_head: bool = Field(False, description="add a per-segment classifier with a background class (K + 1 outputs)")
    attention_temperature: float = Field(0.25, gt=0.0, description="STAN: τ dividing the audio-visual agreement "
                                         "before α's softmax over cells (smaller = sharper)")
    attention_neighbourhood: float = Field(0.5, ge=0.0, le=1.0, description="STAN: weight c of a cell's edge "
                                           "neighbours (c² the corners) when pooling the agreement; 0 = no pooling")
    region_dropout: float = Field(0.5, ge=0.0, lt=1.0, description="STAN: dropout on each cell's normalised "
                                  "frozen feature before the region classifier (training only)")
    attention_passes: int = Field(2, ge=1, le=4, description="STAN: attention passes; the first asks where what is "
                                  "heard shows, each later one where what is heard and seen so far (ℓ^a + ℓ^v) shows; "
                                  "the last pass's α, β^v and ℓ^v are the head's")


class HeadSizes(HeadOptions):
    """The options plus the input and output sizes a feature store gives: what a head is built from.

    :class:`stan_head.models.HeadConfig` adds the registered head's name.
    """

    num_classes: int = Field(..., ge=1)
    visual_dim: int = Field(..., ge=1)
    audio_dim: int = Field(..., ge=1)


@dataclass
class HeadOutput:
    """What every head returns for a batch.

    logits:          (B, K) video-level class scores.
    alpha:           (B, T, H, W) spatial attention; sums to 1 over H·W for every t (uniform where
                     the head has no spatial attention or the segment is masked).
    beta_a, beta_v:  (B, T) temporal attention for audio / vision; sums to 1 over the valid
                     segments, exactly 0 on masked segments.
    segment_logits:  (B, T, K + 1) per-segment scores (index K = background) when the head has
                     ``segment_head=True``, else None.
    visual_logits:   (B, K) class scores from the attended visual evidence alone (STAN's "where"
                     pathway), for the trainer's visual-evidence loss; None for heads without one.
    segment_visual_logits: (B, T, K) the same evidence of each segment on its own, before the
                     temporal pooling (``visual_logits`` pools these over t); for the per-segment
                     "where" test; None for heads without a visual-evidence pathway.
    audio_logits:    (B, K) class scores from the audio alone (what is heard); None for heads
                     without an audio pathway of their own.
    region_presence: (B, T, K) for every segment and class, the largest probability the region
                     classifier gives that class over the segment's cells (how clearly the class
                     shows anywhere in the frame), for the trainer's absence loss; None for heads
                     without a region classifier.
    """

    logits: torch.Tensor
    alpha: torch.Tensor
    beta_a: torch.Tensor
    beta_v: torch.Tensor
    segment_logits: torch.Tensor | None = None
    visual_logits: torch.Tensor | None = None
    segment_visual_logits: torch.Tensor | None = None
    audio_logits: torch.Tensor | None = None
    region_presence: torch.Tensor | None = None


class Head(nn.Module):
    """Base class of the heads: ``forward(visual, audio, segment_mask) -> HeadOutput``.

    visual: float (B, T, H, W, Cv); audio: float (B, T, Ca); segment_mask: bool (B, T), True
    where the segment lies inside the clip (padded segments trail the valid ones).

    ``attends`` says whether the head has attention of its own (α, β): a head without it returns
    uniform maps, which are no explanation, and ``evaluate`` leaves its attention explainers out.
    """

    config: HeadSizes
    attends: bool = True

    def __init__(self, config: HeadSizes) -> None:
        super().__init__()
        self.config = config

    def add_input_layers(self) -> None:
        """The layers every head starts with: ``proj_v`` / ``proj_a`` (features to width d) and ``drop``."""
        d = self.config.d_model
        self.proj_v = input_projection(self.config.visual_dim, d)
        self.proj_a = input_projection(self.config.audio_dim, d)
        self.drop = nn.Dropout(self.config.dropout)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor, segment_mask: torch.Tensor,
                attention_temperature: float | None = None) -> HeadOutput:  # pragma: no cover - abstract
        """``attention_temperature``: the temperature of the head's spatial attention for this call (a
        training schedule's, :func:`stan_head.train.attention_temperature_at`); None = the configured one.
        Heads without a temperature of their own ignore it."""
        raise NotImplementedError

    def check_inputs(self, visual: torch.Tensor, audio: torch.Tensor, segment_mask: torch.Tensor) -> None:
        """Raise a ValueError naming the mismatch when inputs do not fit this head."""
        if visual.dim() != 5:
            raise ValueError(f"visual must be (B, T, H, W, Cv), got shape {tuple(visual.shape)}")
        if audio.dim() != 3:
            raise ValueError(f"audio must be (B, T, Ca), got shape {tuple(audio.shape)}")
        b, t = visual.shape[:2]
        if visual.shape[-1] != self.config.visual_dim:
            raise ValueError(f"visual has {visual.shape[-1]} channels, the head expects {self.config.visual_dim}")
        if audio.shape[-1] != self.config.audio_dim:
            raise ValueError(f"audio has {audio.shape[-1]} channels, the head expects {self.config.audio_dim}")
        if tuple(audio.shape[:2]) != (b, t) or tuple(segment_mask.shape) != (b, t):
            raise ValueError(
                f"batch/segment sizes disagree: visual {tuple(visual.shape[:2])}, audio {tuple(audio.shape[:2])}, "
                f"segment_mask {tuple(segment_mask.shape)}"
            )
        if segment_mask.dtype != torch.bool:
            raise ValueError(f"segment_mask must be bool, got {segment_mask.dtype}")


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``mask`` (True = keep).

    Masked entries get exactly 0; a slice with no True entry gets all zeros (never NaN), and
    gradients stay finite in both cases.
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(filled, dim=dim)
    return weights * mask.to(weights.dtype)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, T, D) over the segments where ``mask`` (B, T) is True -> (B, D)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def uniform_temporal(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Uniform temporal attention over the valid segments: (B, T), zeros on masked segments."""
    m = mask.to(dtype)
    return m / m.sum(dim=1, keepdim=True).clamp_min(1.0)


def input_projection(in_dim: int, d: int) -> nn.Sequential:
    """Linear -> LayerNorm: how every head brings visual or audio features to its width d."""
    return nn.Sequential(nn.Linear(in_dim, d), nn.LayerNorm(d))


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    """Two-layer classifier: Linear -> GELU -> Dropout -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


def segment_classifier(config: HeadSizes, in_dim: int) -> nn.Sequential | None:
    """The optional per-segment classifier (K + 1 outputs, index K = background); None without ``segment_head``."""
    if not config.segment_head:
        return None
    return mlp(in_dim, config.hidden_dim, config.num_classes + 1, config.dropout)
