"""Late-fusion baseline: mean-pooled features, no attention.

Visual maps are averaged over H·W and over the valid segments, audio over the valid segments;
each is projected to d with LayerNorm, concatenated and classified by the same MLP as STAN.
Its HeadOutput carries uniform α (1/(H·W)) and uniform β over the valid segments, so every
consumer of explanations can treat it like any other head (it is the "no explanation" floor).
"""

from __future__ import annotations

import torch

from stan_head.models.base import Head, HeadOutput, HeadSizes, masked_mean, mlp, segment_classifier, uniform_temporal


class LateFusion(Head):
    """Mean-pool, project, concatenate, classify."""

    attends = False  # α and β are uniform: nothing to explain with

    def __init__(self, config: HeadSizes) -> None:
        super().__init__(config)
        d = config.d_model
        self.add_input_layers()
        self.classifier = mlp(2 * d, config.hidden_dim, config.num_classes, config.dropout)
        self.segment_classifier = segment_classifier(config, 2 * d)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor, segment_mask: torch.Tensor,
                attention_temperature: float | None = None) -> HeadOutput:
        """visual (B,T,H,W,Cv), audio (B,T,Ca), segment_mask bool (B,T) -> HeadOutput (no attention:
        ``attention_temperature`` is ignored)."""
        self.check_inputs(visual, audio, segment_mask)
        b, t, h, w, _ = visual.shape
        v_seg = visual.mean(dim=(2, 3))  # (B,T,Cv)
        z = torch.cat(
            [self.proj_v(masked_mean(v_seg, segment_mask)), self.proj_a(masked_mean(audio, segment_mask))], dim=-1
        )
        logits = self.classifier(self.drop(z))
        segment_logits = None
        if self.segment_classifier is not None:
            per_seg = torch.cat([self.proj_v(v_seg), self.proj_a(audio)], dim=-1)
            segment_logits = self.segment_classifier(self.drop(per_seg))
        beta = uniform_temporal(segment_mask, logits.dtype)
        alpha = torch.full((b, t, h, w), 1.0 / (h * w), dtype=logits.dtype, device=logits.device)
        return HeadOutput(logits=logits, alpha=alpha, beta_a=beta, beta_v=beta.clone(), segment_logits=segment_logits)
