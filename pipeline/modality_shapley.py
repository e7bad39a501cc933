"""Exact Shapley values of the modalities of one prediction, on the probability scale.

The players are the modalities; the value of a coalition S is the predicted probability
when only the modalities in S are shown and the others are ABSENT, in exactly the form the
model meets a missing modality at training and in the clinic: the input zero-filled and its
presence flag False (what the ETL writes for a stay without a film, and what
`pipeline.inference.predict_split(withhold=...)` does). There is no invented baseline: the
model's own prediction rule decides what "absent" means (the fusion head zeroes the
features, IGM/MLA/AUG average the present modalities' predictions, DrFuse masks tokens).

With M modalities all 2^M coalitions are evaluated (4 for two, 8 for three), so the values
are exact:
    phi_m = sum_{S not containing m} |S|! (M - |S| - 1)! / M! * (v(S + m) - v(S)),
and they add up: sum_m phi_m = v(all) - v(none). A modality a sample does not have
(presence False in the data) contributes exactly 0: showing it changes nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

Predict = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], torch.Tensor]


def coalitions(modalities: list[str]) -> list[tuple[str, ...]]:
    """Every subset of `modalities` (in their order), the empty one first: 2^M tuples."""
    return [c for r in range(len(modalities) + 1) for c in itertools.combinations(modalities, r)]


def shapley_weight(size: int, n_players: int) -> float:
    """|S|! (M - |S| - 1)! / M!: the weight of coalition S (of `size` players, m not in it)."""
    return math.factorial(size) * math.factorial(n_players - size - 1) / math.factorial(n_players)


def absent(inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor], shown: tuple[str, ...]):
    """(inputs, present) with every modality not in `shown` made absent: zero input, presence False."""
    x = {m: v if m in shown else torch.zeros_like(v) for m, v in inputs.items()}
    p = {m: v if m in shown else torch.zeros_like(v) for m, v in present.items()}
    return x, p


def shapley_from_values(values: dict[tuple[str, ...], torch.Tensor], modalities: list[str]) -> torch.Tensor:
    """Shapley values `[B, M, K]` from the value `[B, K]` of every coalition (keyed as `coalitions` gives them)."""
    n = len(modalities)
    out = []
    for m in modalities:
        phi = torch.zeros_like(values[()])
        for c in coalitions([o for o in modalities if o != m]):
            with_m = tuple(o for o in modalities if o in c or o == m)
            phi = phi + shapley_weight(len(c), n) * (values[with_m] - values[c])
        out.append(phi)
    return torch.stack(out, dim=1)


@torch.no_grad()
def modality_shapley(predict: Predict, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                     modalities: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact modality Shapley values of a batch.

    Args:
        predict: `(inputs, present) -> [B, K]` probabilities (the method's own prediction rule).
        inputs: modality -> `[B, ...]` model inputs.
        present: modality -> `[B]` presence flags (bool or 0/1 float, as `predict` takes them).
        modalities: the players, in the model's order.
    Returns:
        (phi `[B, M, K]`, p_full `[B, K]`, p_none `[B, K]`), float32, with
        phi.sum(1) == p_full - p_none (up to rounding).
    """
    values = {}
    for c in coalitions(modalities):
        x, p = absent(inputs, present, c)
        values[c] = predict(x, p).float()
    return shapley_from_values(values, modalities), values[tuple(modalities)], values[()]
