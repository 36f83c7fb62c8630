"""STAN: the space-time attention head ("Where and When", our design in DESIGN.md "STAN head").

What is heard: temporal attention over the audio segments, with the clip's mean audio as context,
    β^a = softmax_t(w_aᵀ tanh(U_a a_t + U_c ā)),  audio logits ℓ^a = W_a Σ_t β^a_t a_t,  q = softmax(ℓ^a).
What each region shows: a linear classifier on every cell's (LayerNorm-ed) frozen feature,
    p_{t,i} = softmax(W_r LN(v_{t,i})) over the K classes (in training with dropout,
    ``region_dropout``, on LN(v_{t,i}): it is learnt weakly from a few clips a class).
Where: the cells whose class agrees with what is heard,
    g_{t,i} = log Σ_k q_k p_{t,i}(k),   α_t = softmax_i(S(g_t) / τ),
where S pools the agreement over each cell's 3×3 neighbourhood (weights 1 / c / c² for the cell, its
edge and its corner neighbours; zero outside the grid) and τ is ``attention_temperature``.
The audio decides which classes count (a sound shared by two classes keeps both), the region
classifier which cells show one of them; a silent distractor of another class disagrees with the
sound whatever its size, position or drawing order, and a silent segment points where the clip's
sound source is (q is the clip's). The neighbourhood pooling puts the peak on the middle of the
blob of cells that see an object (the last feature maps of a CNN spread one object over 2-4 cells).
Where, again (``attention_passes`` P, default 2): each later pass asks the same question with the fused
posterior of the pass before in place of the audio's, q' = softmax(ℓ^a + ℓ^v), so where the sound leaves a
pair of classes open the clip's visual evidence so far narrows it (a brief look-alike of the other member of
the pair loses α). The last pass's α, β^v, e_t and ℓ^v are the head's; the passes share every weight.
When (vision): ṽ_t = proj_v(Σ_i α_{t,i} v_{t,i}), β^v = softmax_t(w_vᵀ tanh(U_v ṽ_t + U_c' ā)).
Visual evidence: ℓ^v = Σ_t β^v_t e_t, e_t = Σ_i α_{t,i} W_r LN(v_{t,i}) (the attended cells' class scores;
e_t is ``HeadOutput.segment_visual_logits``).
Logits: ℓ = ℓ^a + ℓ^v (a product of the two experts): the sound names its classes, the attended
object decides between them. Optional per-segment head [ṽ_t ; a_t] -> K + 1 (background).

The trainer's losses: cross-entropy of ℓ, plus ``visual_loss_weight`` × that of ℓ^v
(``HeadOutput.visual_logits``), which trains the region classifier on the cells α picks, plus
``audio_loss_weight`` × that of ℓ^a (q's own: through ℓ alone the audio may prefer one of a sound-alike
pair wherever the visual evidence decides it, and α would then look for the other), plus
``absence_loss_weight`` × the absence loss on ``HeadOutput.region_presence`` = max_i p_{t,i}: a class
the sound allows but the label rules out must show in no cell of the clip (see
:func:`stan_head.train.absence_loss`). Without it the region classifier learns one member of a
sound-sharing pair by its look and the other as "anything else", and α for the other sits on background.
The trainer also warms α up: ``forward(..., attention_temperature=...)`` replaces τ for one call, and
training starts from a soft α that sharpens to τ (:func:`stan_head.train.attention_temperature_at`), so the
untrained region classifier's first guesses do not decide which cells the visual-evidence loss teaches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stan_head.models.base import Head, HeadOutput, HeadSizes, masked_mean, masked_softmax, segment_classifier


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


def agreement(audio_logits: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
    """log Σ_k q_k p_i(k): how well each region's class posterior agrees with the audio's.

    audio_logits (B, K), region_logits (B, T, N, K) -> (B, T, N), each ≤ 0 (a log probability:
    the chance that the heard class and the region's class coincide).
    """
    log_q = torch.log_softmax(audio_logits, dim=-1)[:, None, None, :]
    return torch.logsumexp(log_q + torch.log_softmax(region_logits, dim=-1), dim=-1)


def neighbourhood_kernel(c: float) -> torch.Tensor:
    """The 3×3 pooling weights (1 for the cell, c for its edge neighbours, c² for the corners), (1, 1, 3, 3)."""
    edge = torch.tensor([c, 1.0, c])
    return (edge[:, None] * edge[None, :])[None, None]


def pool_neighbourhood(log_scores: torch.Tensor, kernel: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """log of Σ_j kernel_j exp(score_j) over each cell's 3×3 neighbourhood on the H×W grid (zero outside).

    log_scores (B, T, H·W) -> (B, T, H·W). Computed in the log domain (max-shifted per map), so the
    result is finite for any finite input.
    """
    b, t, n = log_scores.shape
    top = log_scores.amax(dim=-1, keepdim=True).detach()
    x = (log_scores - top).exp().reshape(b * t, 1, h, w)
    pooled = F.conv2d(x, kernel.to(x.dtype), padding=1).reshape(b, t, n)
    return torch.log(pooled.clamp_min(torch.finfo(pooled.dtype).tiny)) + top


class STAN(Head):
    """Space-time attention head; see the module docstring for the equations."""

    def __init__(self, config: HeadSizes) -> None:
        super().__init__(config)
        d, k = config.d_model, config.num_classes
        self.add_input_layers()
        self.temporal_a = AdditiveScore(d, d, config.attn_dim)
        self.temporal_v = AdditiveScore(d, d, config.attn_dim)
        self.audio_classifier = nn.Linear(d, k)
        self.region_classifier = nn.Sequential(nn.LayerNorm(config.visual_dim), nn.Linear(config.visual_dim, k))
        self.region_dropout = nn.Dropout(config.region_dropout)  # between the two: the weights keep their names
        self.register_buffer("kernel", neighbourhood_kernel(config.attention_neighbourhood), persistent=False)
        self.segment_classifier = segment_classifier(config, 2 * d)

    def _look(self, query: torch.Tensor, regions: torch.Tensor, region_logits: torch.Tensor,
              segment_mask: torch.Tensor, ctx_a: torch.Tensor, tau: float, h: int, w: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One attention pass with class scores ``query`` (B,K): α (B,T,N), ṽ (B,T,d), β^v (B,T), e (B,T,K), ℓ^v (B,K)."""
        n = h * w
        score = agreement(query, region_logits)  # (B,T,N)
        if self.config.attention_neighbourhood > 0:
            score = pool_neighbourhood(score, self.kernel, h, w)
        alpha = torch.softmax(score / tau, dim=-1)
        alpha = torch.where(segment_mask.unsqueeze(-1), alpha, torch.full_like(alpha, 1.0 / n))
        # When (vision) and the visual evidence. Pooling before projecting costs one d-wide projection per
        # segment instead of one per cell.
        v_att = self.drop(self.proj_v(torch.einsum("btn,btnc->btc", alpha, regions)))  # (B,T,d)
        beta_v = masked_softmax(self.temporal_v(v_att, ctx_a), segment_mask, dim=-1)  # (B,T)
        segment_evidence = torch.einsum("btn,btnk->btk", alpha, region_logits)  # (B,T,K)
        return alpha, v_att, beta_v, segment_evidence, torch.einsum("bt,btk->bk", beta_v, segment_evidence)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor, segment_mask: torch.Tensor,
                attention_temperature: float | None = None) -> HeadOutput:
        """visual (B,T,H,W,Cv), audio (B,T,Ca), segment_mask bool (B,T) -> HeadOutput.

        ``attention_temperature`` replaces τ for this call (the trainer's warm-up schedule); None = the
        configured ``attention_temperature``.
        """
        self.check_inputs(visual, audio, segment_mask)
        b, t, h, w, cv = visual.shape
        n = h * w
        regions = visual.reshape(b, t, n, cv)

        # What is heard, and when.
        a = self.proj_a(audio)  # (B,T,d)
        ctx_a = masked_mean(a, segment_mask).unsqueeze(1)  # (B,1,d)
        beta_a = masked_softmax(self.temporal_a(a, ctx_a), segment_mask, dim=-1)  # (B,T)
        a = self.drop(a)
        audio_logits = self.audio_classifier(torch.einsum("bt,btd->bd", beta_a, a))  # (B,K)

        # What each region shows; where it agrees with what is heard (pass 1), then with what is heard and
        # seen so far (passes 2..P): the query of each pass is the fused posterior ℓ^a + ℓ^v of the one before.
        norm, linear = self.region_classifier
        region_logits = linear(self.region_dropout(norm(regions)))  # (B,T,N,K)
        tau = self.config.attention_temperature if attention_temperature is None else attention_temperature
        query = audio_logits
        for _ in range(self.config.attention_passes):
            alpha, v_att, beta_v, segment_evidence, visual_logits = self._look(
                query, regions, region_logits, segment_mask, ctx_a, tau, h, w)
            query = audio_logits + visual_logits
        segment_logits = None
        if self.segment_classifier is not None:
            segment_logits = self.segment_classifier(torch.cat([v_att, a], dim=-1))  # (B,T,K+1)
        return HeadOutput(
            logits=audio_logits + visual_logits,
            alpha=alpha.reshape(b, t, h, w),
            beta_a=beta_a,
            beta_v=beta_v,
            segment_logits=segment_logits,
            visual_logits=visual_logits,
            segment_visual_logits=segment_evidence,
            audio_logits=audio_logits,
            region_presence=torch.softmax(region_logits, dim=-1).amax(dim=2),
        )
