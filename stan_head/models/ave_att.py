"""AVE's A+V-att baseline (Tian, Shi, Li, Duan, Xu, ECCV 2018, "Audio-Visual Event Localization
in Unconstrained Videos"): audio-guided visual attention, then one BiLSTM per modality, fused.

Per segment t the visual regions are attended with the audio as guide,
    α_t = softmax_i(w ᵀ tanh(W_v v_{t,i} + W_a a_t)),  ṽ_t = Σ_i α_{t,i} v_{t,i}
(as in the original, the attended vector is taken over the raw CNN features, here projected to d
with LayerNorm). Audio and ṽ each run through a BiLSTM over the valid segments; the hidden
states are concatenated per segment, mean-pooled over valid segments for the video-level
classifier, and fed per segment to the optional K + 1 head. β is uniform (the model has no
temporal attention).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from stan_head.models.base import Head, HeadOutput, HeadSizes, masked_mean, mlp, segment_classifier, uniform_temporal
from stan_head.models.stan import AdditiveScore


def _lengths(segment_mask: torch.Tensor) -> torch.Tensor:
    """Valid-segment counts (B,) on the CPU; refuses masks whose padding does not trail."""
    lengths = segment_mask.sum(dim=1)
    t = segment_mask.shape[1]
    prefix = torch.arange(t, device=segment_mask.device).unsqueeze(0) < lengths.unsqueeze(1)
    if not torch.equal(prefix, segment_mask):
        raise ValueError("ave_att needs padded segments to trail the valid ones (segment_mask must be a prefix)")
    return lengths.clamp_min(1).cpu()


class AVEAtt(Head):
    """Audio-guided visual attention + BiLSTMs per modality, concatenated."""

    def __init__(self, config: HeadSizes) -> None:
        super().__init__(config)
        d, hid = config.d_model, config.lstm_hidden
        self.add_input_layers()
        self.spatial = AdditiveScore(d, d, config.attn_dim)
        self.lstm_a = nn.LSTM(d, hid, batch_first=True, bidirectional=True)
        self.lstm_v = nn.LSTM(d, hid, batch_first=True, bidirectional=True)
        self.classifier = mlp(4 * hid, config.hidden_dim, config.num_classes, config.dropout)
        self.segment_classifier = segment_classifier(config, 4 * hid)

    def _bilstm(self, lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out  # (B,T,2·hid), zeros on padded steps

    def forward(self, visual: torch.Tensor, audio: torch.Tensor, segment_mask: torch.Tensor,
                attention_temperature: float | None = None) -> HeadOutput:
        """visual (B,T,H,W,Cv), audio (B,T,Ca), segment_mask bool (B,T) -> HeadOutput (AVE's attention has no
        temperature: ``attention_temperature`` is ignored)."""
        self.check_inputs(visual, audio, segment_mask)
        b, t, h, w, cv = visual.shape
        n = h * w
        lengths = _lengths(segment_mask)
        v = self.proj_v(visual.reshape(b, t, n, cv))
        a = self.proj_a(audio)
        alpha = torch.softmax(self.spatial(v, a.unsqueeze(2)), dim=-1)
        alpha = torch.where(segment_mask.unsqueeze(-1), alpha, torch.full_like(alpha, 1.0 / n))
        v_att = self.drop(torch.einsum("btn,btnd->btd", alpha, v))
        a = self.drop(a)
        fused = torch.cat([self._bilstm(self.lstm_a, a, lengths), self._bilstm(self.lstm_v, v_att, lengths)], dim=-1)
        fused = self.drop(fused)
        logits = self.classifier(masked_mean(fused, segment_mask))
        segment_logits = self.segment_classifier(fused) if self.segment_classifier is not None else None
        beta = uniform_temporal(segment_mask, logits.dtype)
        return HeadOutput(
            logits=logits,
            alpha=alpha.reshape(b, t, h, w),
            beta_a=beta,
            beta_v=beta.clone(),
            segment_logits=segment_logits,
        )
