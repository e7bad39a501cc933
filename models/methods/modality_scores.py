"""Per-modality quantities the balancing baselines share (OGM-GE, AGM, ...).

Where a paper scores a modality by "the softmax probability of the true class", the
sigmoid tasks (multilabel, binary) use the match score of the MASAM code
(github Orange2107/MASAM-Multimodal-Adaptive-SAM, `calculate_score`):

    score_i = sum_c [ y_ic p_ic + (1 - y_ic)(1 - p_ic) ],   p = sigmoid(logit),

the expected number of labels predicted right; for one binary label it is the
probability given to the true outcome, exactly the softmax rule's analogue.

Data-parallel runs (torchrun): a score is a mean over the samples of the GLOBAL batch,
so each rank sums its samples and `summed_over_ranks` adds the sums and counts of every
rank (one collective) before any ratio or coefficient is taken; every rank then decides
alike, exactly as one process given the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..distributed import all_reduce_sum_
from ..precision import upcast


def slice_logits(model, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unimodal logits read off the fusion head: `W_m z_m + b / M` (`[B, K]` each).

    OGM-GE's (and BalanceBenchmark's) unimodal scores for a concat head W[z_1||...||z_M] + b.
    An absent modality's features are zeroed, as the fusion head sees them.

    Args:
        model: a `FusionModel` (its `fusion_head` is one `nn.Linear` over the concatenation).
        features: modality -> `[B, H_m]` encoder features.
        present: modality -> `[B]` bool.
    """
    head, mods = model.fusion_head, model.modalities
    weight = head.weight  # [K, sum H_m]
    bias = head.bias if head.bias is not None else torch.zeros(weight.shape[0], device=weight.device)
    out, start = {}, 0
    for m in mods:
        z = features[m] * present[m].to(features[m].dtype).unsqueeze(1)
        width = z.shape[1]
        out[m] = z @ weight[:, start : start + width].T + bias / len(mods)
        start += width
    return out


def match_score(logits: torch.Tensor, y: torch.Tensor, task_type: str) -> torch.Tensor:
    """Per-sample score `[B]`: softmax probability of the true class (multiclass) or the match score.

    Args:
        logits: `[B, K]`.
        y: `[B]` class indices (multiclass) or `[B, K]` 0/1 labels.
        task_type: "multilabel", "binary" or "multiclass".
    """
    logits = upcast(logits)
    if task_type == "multiclass":
        return torch.softmax(logits, -1).gather(1, y.long().unsqueeze(1)).squeeze(1)
    p, target = torch.sigmoid(logits), y.to(logits.dtype)
    return (target * p + (1 - target) * (1 - p)).sum(1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` `[B]` over `mask` `[B]` (0 when nothing is masked in; no host sync)."""
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of `values` `[B]` over `mask` `[B]`, number masked in), 0-d tensors of `values`' dtype."""
    weight = mask.to(values.dtype)
    return (values * weight).sum(), weight.sum()


def summed_over_ranks(
    sums: torch.Tensor, counts: torch.Tensor, extra: Sequence[torch.Tensor] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """(means `[M]`, counts `[M]`) over the samples of every data-parallel rank.

    Args:
        sums: `[M]` this rank's sums (e.g. of a score over its present samples).
        counts: `[M]` this rank's sample counts.
        extra: tensors of `sums`' dtype summed over ranks in the same collective (in place).
    Returns:
        the means (0 where the count is 0) and the global counts; in one process, this
        rank's (no collective).
    """
    both = torch.stack([sums, counts.to(sums.dtype)])
    all_reduce_sum_([both, *extra])
    return both[0] / both[1].clamp(min=1.0), both[1]


def mean_of_others(values: torch.Tensor) -> torch.Tensor:
    """`[M]` -> `[M]`: entry m is the mean of the other M - 1 entries (M >= 2)."""
    return (values.sum() - values) / (values.numel() - 1)


def scale_gradient(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient flowing back through `x` by `k`.

    What a backward hook `grad -> k * grad` on `x` does, written as a graph expression.
    """
    return x * k + x.detach() * (1 - k)
