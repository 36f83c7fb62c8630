"""STAN: the space-time attention head ("Where and When", our design in DESIGN.md "STAN head").

Where: audio-guided spatial attention per segment,
    s_{t,i} = w_sᵀ tanh(W_v v_{t,i} + W_a a_t),  α_t = softmax_i(s_t),  ṽ_t = Σ_i α_{t,i} v_{t,i}.
When: temporal attention per modality with the other modality's mean as context,
    β^a = softmax_t(w_aᵀ tanh(U_a a_t + U_c c_v)),  β^v = softmax_t(w_vᵀ tanh(U_v ṽ_t + U_c' c_a)).
Clip vector z = [Σ_t β^a_t a_t ; Σ_t β^v_t ṽ_t] -> MLP -> K logits; optional per-segment head
[ṽ_t ; a_t] -> K + 1 (background).

Visual evidence: a linear classifier on the attended visual vector alone, Σ_t β^v_t ṽ_t -> K
(``HeadOutput.visual_logits``). The trainer adds its cross-entropy (``visual_loss_weight``):
without it, a clip whose sound alone names the class gives α no reason to find the object, and
the "where" explanation is arbitrary. With it, the audio-guided α must pick the regions whose
features name the sounding class, i.e. the sounding object rather than silent distractors.
"""

from __future__ import annotations

import torch
from torch import nn

from stan_head.models.base import Head, HeadOutput, HeadSizes, masked_mean, masked_softmax, mlp, segment_classifier


class AdditiveScore(nn.Module):
    """w ᵀ tanh(U x + V c): one scalar score per position, (…, D) + context (…, Dc) -> (…)."""

    def __init__(self, in_dim: int, ctx_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.u = nn.Linear(in_dim, attn_dim)
        self.v = nn.Linear(ctx_dim, attn_dim, bias=False)
        self.w = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """x (…, N, D), ctx broadcastable to (…, N, Dc) after projection -> scores (…, N)."""
        return self.w(torch.tanh(self.u(x) + self.v(ctx))).squeeze(-1)


class STAN(Head):
    """Space-time attention head; see the module docstring for the equations."""

    def __init__(self, config: HeadSizes) -> None:
        super().__init__(config)
        d = config.d_model
        self.add_input_layers()
        self.spatial = AdditiveScore(d, d, config.attn_dim)
        self.temporal_a = AdditiveScore(d, d, config.attn_dim)
        self.temporal_v = AdditiveScore(d, d, config.attn_dim)
        self.classifier = mlp(2 * d, config.hidden_dim, config.num_classes, config.dropout)
        self.visual_classifier = nn.Linear(d, config.num_classes)
        self.segment_classifier = segment_classifier(config, 2 * d)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor, segment_mask: torch.Tensor) -> HeadOutput:
        """visual (B,T,H,W,Cv), audio (B,T,Ca), segment_mask bool (B,T) -> HeadOutput."""
        self.check_inputs(visual, audio, segment_mask)
        b, t, h, w, cv = visual.shape
        n = h * w
        v = self.proj_v(visual.reshape(b, t, n, cv))  # (B,T,N,d)
        a = self.proj_a(audio)  # (B,T,d)

        # Where: audio-guided spatial attention over the N regions of each segment.
        scores = self.spatial(v, a.unsqueeze(2))  # (B,T,N)
        alpha = torch.softmax(scores, dim=-1)
        alpha = torch.where(segment_mask.unsqueeze(-1), alpha, torch.full_like(alpha, 1.0 / n))
        # Dropout on the pooled vectors, not on the B·T·N region features: same regularisation of
        # what the classifier sees, without drawing B·T·N·d random numbers per step.
        v_att = self.drop(torch.einsum("btn,btnd->btd", alpha, v))  # (B,T,d)
        a = self.drop(a)

        # When: temporal attention per modality with the other modality's mean as context.
        ctx_v = masked_mean(v_att, segment_mask).unsqueeze(1)  # (B,1,d)
        ctx_a = masked_mean(a, segment_mask).unsqueeze(1)
        beta_a = masked_softmax(self.temporal_a(a, ctx_v), segment_mask, dim=-1)  # (B,T)
        beta_v = masked_softmax(self.temporal_v(v_att, ctx_a), segment_mask, dim=-1)

        z_v = torch.einsum("bt,btd->bd", beta_v, v_att)  # (B,d)
        z = torch.cat([torch.einsum("bt,btd->bd", beta_a, a), z_v], dim=-1)  # (B,2d)
        logits = self.classifier(z)
        segment_logits = None
        if self.segment_classifier is not None:
            segment_logits = self.segment_classifier(torch.cat([v_att, a], dim=-1))  # (B,T,K+1)
        return HeadOutput(
            logits=logits,
            alpha=alpha.reshape(b, t, h, w),
            beta_a=beta_a,
            beta_v=beta_v,
            segment_logits=segment_logits,
            visual_logits=self.visual_classifier(z_v),
        )
