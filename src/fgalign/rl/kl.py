"""KL to the reference policy: per-token estimators and the controllers that set its coefficient β."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def kl_per_token(logprobs: Tensor, ref_logprobs: Tensor, response_mask: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token KL(π || π_ref) estimate on sampled tokens, 0 outside the response.  # (B, T)

    k1 = log π − log π_ref (unbiased, can be negative); k3 = exp(−k1) − 1 + k1 (unbiased, never negative,
    lower variance; Schulman's "Approximating KL divergence").
    """
    # Zero masked positions *before* the arithmetic: a −inf log-prob after EOS would make inf − inf = NaN.
    log_ratio = torch.where(response_mask, logprobs - ref_logprobs, 0.0)  # (B, T)
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.where(response_mask, torch.expm1(-log_ratio) + log_ratio, 0.0)
    raise ValueError(f"unknown KL estimator '{estimator}': expected 'k1' or 'k3'")


@dataclass
class FixedKLController:
    """A constant β."""

    beta: float

    def update(self, kl_per_response: float, n_responses: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state["beta"])


@dataclass
class AdaptiveKLController:
    """Ziegler et al. (2019): move β so that the mean KL per response approaches `target`.

    β ← β · (1 + clip(KL / target − 1, −0.2, 0.2) · n / horizon), with n the responses seen this step.
    One target for every method is how they are compared at the same KL (DESIGN §6).
    """

    beta: float
    target: float
    horizon: float

    def update(self, kl_per_response: float, n_responses: int) -> None:
        if not math.isfinite(kl_per_response):
            return
        error = min(max(kl_per_response / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_responses / self.horizon

    def state_dict(self) -> dict:
        return {"beta": self.beta, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state["beta"])


def make_kl_controller(beta: float, target: float | None, horizon: float):
    """Adaptive when a target KL (nats per response) is given, else fixed."""
    return AdaptiveKLController(beta, target, horizon) if target else FixedKLController(beta)
