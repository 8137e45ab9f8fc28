"""Attention for encoder-decoder LSTMs (Bahdanau et al. 2015; Luong et al. 2015).

One module, one score switch, shared masking (in the spirit of OpenNMT-py's GlobalAttention):

- ``kind="bahdanau"`` (Bahdanau et al. 2015, additive):
  e_{t,i} = v^T tanh(W_1 h_{t-1}^dec + W_2 h_i^enc [+ W_c c_{t,i}^coverage]).
- ``kind="luong"`` (Luong et al. 2015, global): dot e_{t,i} = h_t^dec . h_i^enc;
  general e_{t,i} = h_t^dec^T W h_i^enc; concat e_{t,i} = v^T tanh(W [h_t^dec; h_i^enc]).
- ``kind="local"`` (Luong et al. 2015, local-p): p_t = (len - 1) sigmoid(v_p^T tanh(W_p h_t^dec)),
  alpha_{t,i} proportional to align(h_t^dec, h_i^enc) exp(-(i - p_t)^2 / (2 sigma^2)) on
  |i - p_t| <= D, sigma = D / 2.

alpha_{t,i} = softmax_i(e_{t,i}) over real source positions and c_t = sum_i alpha_{t,i} h_i^enc.
Coverage (See et al. 2017): c_t^coverage = sum_{k<t} alpha_{k,:}, with the auxiliary loss
sum_i min(alpha_{t,i}, c_{t,i}^coverage).

Also here: Luong's attentional hidden state (``LuongOutput``) and self-attention over an LSTM's own
previous states (``self_attention_context``; Cheng et al. 2016, LSTMN).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from lstm_harness.strict import Strict


class AttentionConfig(Strict):
    """Decoder attention over encoder states, or ``self``: intra-attention in the encoder."""

    type: Literal["bahdanau", "luong", "local", "self"]
    score: Literal["dot", "general", "concat"] | None = None
    window: int = Field(5, ge=1)
    coverage: bool = False
    coverage_weight: float = Field(1.0, ge=0)
    input_feeding: bool = True

    @model_validator(mode="after")
    def check(self) -> AttentionConfig:
        if self.type == "bahdanau" and self.score not in (None, "concat"):
            raise ValueError("bahdanau attention is additive: leave 'score' out "
                             f"(got score '{self.score}')")
        if self.type == "self" and (self.score is not None or self.coverage):
            raise ValueError("self-attention takes neither 'score' nor 'coverage'")
        if self.coverage and not (self.type == "bahdanau" or self.score == "concat"):
            raise ValueError("coverage works with additive scores: type bahdanau, or luong/"
                             "local with score concat")
        return self

Kind = Literal["bahdanau", "luong", "local"]
Score = Literal["dot", "general", "concat"]

_KINDS = ("bahdanau", "luong", "local")
_SCORES = ("dot", "general", "concat")


class Attention(nn.Module):
    """Bahdanau / Luong global / Luong local-p attention with optional coverage.

    Parameters (the README's symbols): ``query_proj`` = W_1 (the query half of W for Luong concat),
    ``key_proj`` = W_2 (additive/concat, key_size -> attn_size) or W (general,
    key_size -> query_size), ``v`` = v, ``cov_proj`` = W_c (1 -> attn_size), ``pos_proj`` = W_p
    and ``pos_v`` = v_p (local only). Scores carry no bias, as in the README's formulas; ``pos_v``
    has one so that the predicted centre p_t can be initialised/learned anywhere.

    - ``kind="bahdanau"``: additive score; ``score`` must be None or "concat" (the same form).
      The caller passes q = h_{t-1}^dec (Luong kinds: q = h_t^dec).
    - ``kind="luong"``: ``score`` in dot/general/concat, default "general".
    - ``kind="local"``: local-p around p_t = (len - 1) sigmoid(v_p^T tanh(W_p q)), using each
      example's true length (``src_len``) rather than the padded width; Luong writes T_x sigma(.),
      we use len - 1 so that p_t lies on the 0-based valid range [0, len - 1]. The align score is
      ``score`` (default "general"). Unlike Luong, the Gaussian-weighted alignments are
      renormalised over the valid positions in the window, so weights sum to 1; positions with
      |i - p_t| > D = ``window`` get exactly 0 (the nearest position to p_t always survives).
      Computed in log space: alpha = softmax_i(e_{t,i} - (i - p_t)^2 / (2 sigma^2)) over the
      window, which equals softmax(e) * Gaussian renormalised, without underflow. The hard window
      makes alpha discontinuous in p_t where a position crosses |i - p_t| = D.
    - ``coverage=True`` (See et al. 2017): adds W_c c_{t,i}^coverage inside the tanh. Only the
      additive forms (bahdanau, and concat for luong/local) support it; dot/general raise
      ValueError.

    ``attn_size`` (default ``key_size``) is the width of the tanh layer (additive/concat and the
    local position network); unused by dot/general global attention.
    """

    def __init__(
        self,
        kind: Kind,
        score: Score | None,
        query_size: int,
        key_size: int,
        attn_size: int | None = None,
        window: int = 5,
        coverage: bool = False,
    ) -> None:
        super().__init__()
        if kind not in _KINDS:
            raise ValueError(f"unknown attention kind {kind!r}; expected one of {_KINDS}")
        if score is not None and score not in _SCORES:
            raise ValueError(f"unknown attention score {score!r}; expected one of {_SCORES}")
        if kind == "bahdanau":
            if score not in (None, "concat"):
                raise ValueError(
                    f"bahdanau attention is additive; score must be None or 'concat', got {score!r}"
                )
            score = "concat"
        elif score is None:
            score = "general"
        if score == "dot" and query_size != key_size:
            raise ValueError(
                f"dot score needs query_size == key_size, got query_size={query_size} "
                f"and key_size={key_size}; use score='general' or 'concat'"
            )
        if coverage and score != "concat":
            raise ValueError(
                f"coverage is only supported with additive scores (kind='bahdanau', or "
                f"score='concat'), got kind={kind!r} score={score!r}"
            )
        if kind == "local" and (isinstance(window, bool) or int(window) != window or window < 1):
            raise ValueError(f"local attention window D must be an integer >= 1, got {window!r}")

        self.kind: str = kind
        self.score: str = score
        self.query_size = query_size
        self.key_size = key_size
        self.attn_size = key_size if attn_size is None else attn_size
        self.window = int(window)
        self.use_coverage = coverage

        self.query_proj: nn.Linear | None = None
        self.key_proj: nn.Linear | None = None
        self.v: nn.Linear | None = None
        self.cov_proj: nn.Linear | None = None
        if score == "general":
            self.key_proj = nn.Linear(key_size, query_size, bias=False)
        elif score == "concat":
            self.query_proj = nn.Linear(query_size, self.attn_size, bias=False)
            self.key_proj = nn.Linear(key_size, self.attn_size, bias=False)
            self.v = nn.Linear(self.attn_size, 1, bias=False)
            if coverage:
                self.cov_proj = nn.Linear(1, self.attn_size, bias=False)
        self.pos_proj: nn.Linear | None = None
        self.pos_v: nn.Linear | None = None
        if kind == "local":
            self.pos_proj = nn.Linear(query_size, self.attn_size, bias=False)
            self.pos_v = nn.Linear(self.attn_size, 1, bias=True)

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind}, score={self.score}, query_size={self.query_size}, "
            f"key_size={self.key_size}, attn_size={self.attn_size}, window={self.window}, "
            f"coverage={self.use_coverage}"
        )

    def precompute(self, keys: Tensor) -> Tensor | None:
        """Per-source key projections, computed once and reused at every decoder step.

        keys [B,S,K] -> W_2 h_i^enc [B,S,A] (additive/concat), W h_i^enc [B,S,Q] (general), or
        None (dot).
        """
        return None if self.key_proj is None else self.key_proj(keys)

    def position(self, query: Tensor, src_len: Tensor) -> Tensor:
        """Local-p centre p_t = (len - 1) sigmoid(v_p^T tanh(W_p q)), [B]; lies in [0, len - 1]."""
        if self.pos_proj is None or self.pos_v is None:
            raise RuntimeError("position() is only defined for kind='local'")
        length = src_len.to(device=query.device, dtype=query.dtype)
        gate = torch.sigmoid(self.pos_v(torch.tanh(self.pos_proj(query)))).squeeze(-1)
        return (length - 1) * gate

    def scores(
        self, query: Tensor, keys: Tensor, proj_keys: Tensor | None, coverage: Tensor | None
    ) -> Tensor:
        """Unnormalised e_{t,i}, [B,S] (no masking)."""
        if self.score == "dot":
            return (keys @ query.unsqueeze(-1)).squeeze(-1)
        if proj_keys is None:
            proj_keys = self.precompute(keys)
        assert proj_keys is not None
        if self.score == "general":
            return (proj_keys @ query.unsqueeze(-1)).squeeze(-1)
        assert self.query_proj is not None and self.v is not None
        hidden = proj_keys + self.query_proj(query).unsqueeze(1)
        if self.cov_proj is not None:
            assert coverage is not None
            hidden = hidden + self.cov_proj(coverage.unsqueeze(-1))
        return self.v(torch.tanh(hidden)).squeeze(-1)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        mask: Tensor,
        proj_keys: Tensor | None = None,
        coverage: Tensor | None = None,
        src_len: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One decoder step of attention.

        query [B,Q] (h_{t-1}^dec for bahdanau, h_t^dec for luong/local); keys [B,S,K] = h^enc;
        mask [B,S] bool, True = real source position (each row needs at least one); proj_keys
        from ``precompute(keys)`` (computed here when None); coverage [B,S] = sum_{k<t}
        alpha_{k,:} (required iff the module was built with coverage=True); src_len [B] true
        source lengths (required for kind='local').

        Returns context c_t = sum_i alpha_{t,i} h_i^enc [B,K] and alpha [B,S] (exactly 0 where
        mask is False; sums to 1 over each row).
        """
        if query.dim() != 2 or query.size(-1) != self.query_size:
            raise ValueError(f"query must be [B, {self.query_size}], got {tuple(query.shape)}")
        if keys.dim() != 3 or keys.size(-1) != self.key_size:
            raise ValueError(f"keys must be [B, S, {self.key_size}], got {tuple(keys.shape)}")
        if mask.shape != keys.shape[:2]:
            raise ValueError(f"mask must be {tuple(keys.shape[:2])}, got {tuple(mask.shape)}")
        if mask.dtype != torch.bool:
            mask = mask.bool()
        if self.use_coverage:
            if coverage is None:
                raise ValueError("this Attention was built with coverage=True; pass coverage [B,S]")
            if coverage.shape != mask.shape:
                raise ValueError(
                    f"coverage must be {tuple(mask.shape)}, got {tuple(coverage.shape)}"
                )
        elif coverage is not None:
            raise ValueError("coverage passed to an Attention built with coverage=False")
        if self.kind == "local" and src_len is None:
            raise ValueError("kind='local' needs src_len [B] (true source lengths) for p_t")
        if not bool(mask.any(dim=-1).all()):
            raise ValueError("attention mask has a row with no real source position")

        energy = self.scores(query, keys, proj_keys, coverage)
        valid = mask
        if self.kind == "local":
            assert src_len is not None
            p = self.position(query, src_len).unsqueeze(-1)  # [B,1]
            positions = torch.arange(keys.size(1), device=keys.device, dtype=energy.dtype)
            dist = positions.unsqueeze(0) - p  # [B,S]
            sigma = self.window / 2.0
            energy = energy - dist.pow(2) / (2.0 * sigma * sigma)
            valid = mask & (dist.abs() <= self.window)
        alpha = torch.softmax(energy.masked_fill(~valid, float("-inf")), dim=-1)
        context = (alpha.unsqueeze(1) @ keys).squeeze(1)
        return context, alpha

    @staticmethod
    def coverage_loss(alpha: Tensor, coverage: Tensor, mask: Tensor | None = None) -> Tensor:
        """See et al. 2017 coverage loss for one step: sum_i min(alpha_{t,i}, c_{t,i}), [B].

        alpha, coverage, mask [B,S]; padded positions (mask False) contribute 0.
        """
        overlap = torch.minimum(alpha, coverage)
        if mask is not None:
            overlap = overlap.masked_fill(~mask.bool(), 0.0)
        return overlap.sum(dim=-1)


class LuongOutput(nn.Module):
    """Luong et al. 2015 attentional hidden state h~_t = tanh(W_c [c_t; h_t]).

    context [B,K], hidden [B,H] -> [B,output_size] (default H); the caller feeds h~_t to the
    softmax layer and, with input feeding, concatenates it to the next step's input.
    """

    def __init__(
        self, context_size: int, hidden_size: int, output_size: int | None = None
    ) -> None:
        super().__init__()
        self.output_size = hidden_size if output_size is None else output_size
        self.proj = nn.Linear(context_size + hidden_size, self.output_size, bias=False)

    def forward(self, context: Tensor, hidden: Tensor) -> Tensor:
        return torch.tanh(self.proj(torch.cat([context, hidden], dim=-1)))


def self_attention_context(
    h_prev: Tensor, history: Tensor, history_mask: Tensor | None = None
) -> Tensor:
    """LSTM self-attention over its own previous states (Cheng et al. 2016, LSTM-Networks).

    Cheng et al. 2016 (LSTMN): beta_{t,k} = softmax_k(h_{t-1} . h_k) over the history k < t,
    h~_t = sum_k beta_{t,k} h_k; the caller then runs h_t = LSTM([h_{t-1}, h~_t], x_t).
    h_prev [B,H]; history [B,t,H]; history_mask [B,t] bool (True = real step) or None.
    Returns h~_t [B,H]: zeros when t == 0, or for a row whose history_mask is all False.
    """
    if history.size(1) == 0:
        return h_prev.new_zeros(h_prev.shape)
    energy = (history @ h_prev.unsqueeze(-1)).squeeze(-1)  # [B,t]
    if history_mask is None:
        beta = torch.softmax(energy, dim=-1)
    else:
        mask = history_mask.bool()
        any_valid = mask.any(dim=-1, keepdim=True)
        energy = torch.where(any_valid, energy.masked_fill(~mask, float("-inf")), 0.0)
        beta = torch.softmax(energy, dim=-1) * mask
    return (beta.unsqueeze(1) @ history).squeeze(1)
