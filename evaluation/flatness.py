"""Flatness of a trained network: Hessian trace, top eigenvalue, loss landscapes.

Definitions follow PyHessian (Yao et al., 2020) and Li et al. (NeurIPS 2018):

- Hessian-vector product by double backprop: Hv = d/dtheta (dL/dtheta . v), with the loss
  written as a sum of per-batch terms (L = sum_b L_b), so a fixed subset of training
  batches never has to sit in one graph.
- Hutchinson's estimator: tr(H) = E_v[v^T H v] with Rademacher v (entries +-1). Returned
  with the standard error of the mean over the vectors, std(ddof=1) / sqrt(n). With the
  full set of 2^P sign vectors the mean is exact (off-diagonal terms cancel).
- Top eigenvalue: power iteration v <- Hv / ||Hv||, lambda = v^T H v (the eigenvalue of
  largest magnitude, as PyHessian reports it).
- Filter-normalised direction: d ~ N(0, I) per tensor; for each filter (slice along the
  first axis) of a weight with >= 2 axes, d_i <- d_i * ||w_i|| / ||d_i||; 1-axis tensors
  (biases, norm scales) get d = 0 (Li et al.'s "ignore biasbn"), so the direction does not
  depend on the weights' scale and landscapes of different networks are comparable.
- Landscapes: L(theta + a d1) on a 1D grid and L(theta + a d1 + b d2) on a 2D grid;
  parameters are restored exactly afterwards.

Restricting `params` to one encoder's parameters gives that encoder's diagonal Hessian
block (per-encoder sharpness) and per-encoder landscapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

LossTerms = Callable[[], Iterable[torch.Tensor]]  # yields scalar terms whose sum is the loss


def hessian_vector_product(loss_terms: LossTerms, params: Sequence[torch.Tensor],
                           vector: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """H v for the loss sum(loss_terms()) with respect to `params` (double backprop).

    Args:
        loss_terms: callable yielding 0-d loss tensors (one per batch), summed.
        params: P tensors requiring grad.
        vector: P tensors shaped like `params`.
    Returns:
        P tensors, H v.
    """
    out = [torch.zeros_like(p) for p in params]
    # The fused attention kernels have no double backward: use the math kernel for the HVP.
    with sdpa_kernel([SDPBackend.MATH]):
        for term in loss_terms():
            grads = torch.autograd.grad(term, params, create_graph=True, allow_unused=True)
            pairs = [(g, v) for g, v in zip(grads, vector, strict=True) if g is not None]
            if not pairs:
                continue
            dot = sum((g * v).sum() for g, v in pairs)
            hv = torch.autograd.grad(dot, params, allow_unused=True)
            for acc, h in zip(out, hv, strict=True):
                if h is not None:
                    acc.add_(h.detach())
    return out


def _inner(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))


def rademacher(params: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """Independent +-1 entries shaped like `params` (drawn on the CPU generator)."""
    return [(torch.randint(0, 2, p.shape, generator=generator, dtype=torch.int64) * 2 - 1).to(p) for p in params]


def hutchinson_trace(loss_terms: LossTerms, params: Sequence[torch.Tensor], n_vectors: int = 16,
                     generator: torch.Generator | None = None,
                     vectors: Iterable[Sequence[torch.Tensor]] | None = None,
                     target_rel_se: float | None = None, max_vectors: int | None = None) -> dict:
    """Hutchinson estimate of tr(H) with its standard error.

    Args:
        loss_terms: see `hessian_vector_product`.
        params: the parameters whose Hessian block is traced.
        n_vectors: number of Rademacher vectors (ignored when `vectors` is given); with
            `target_rel_se`, the minimum number.
        generator: CPU generator for the vectors (seeded by the caller).
        vectors: explicit probe vectors (e.g. the full sign basis in tests).
        target_rel_se: keep drawing vectors (up to `max_vectors`) until se <= target * |trace|.
        max_vectors: the most vectors drawn with `target_rel_se` (default: n_vectors, i.e. fixed).
    Returns:
        {"trace": mean of v^T H v, "se": its standard error (None for one vector),
         "n_vectors": n, "n_params": number of scalars, "samples": [v^T H v ...],
         "target_rel_se": the target (None: fixed count), "se_reached": whether se <= target * |trace|}.
    """
    if vectors is None:
        generator = generator or torch.Generator().manual_seed(0)
        limit = max(n_vectors, max_vectors or n_vectors) if target_rel_se is not None else n_vectors
        vectors = (rademacher(params, generator) for _ in range(limit))
    samples: list[float] = []
    for v in vectors:
        samples.append(_inner(v, hessian_vector_product(loss_terms, params, v)))
        if target_rel_se is not None and len(samples) >= max(n_vectors, 2) \
                and _relative_se(samples) <= target_rel_se:
            break  # the same vectors in the same order: a larger budget only adds vectors
    n = len(samples)
    se = float(np.std(samples, ddof=1) / math.sqrt(n)) if n > 1 else None
    return {"trace": float(np.mean(samples)), "se": se, "n_vectors": n,
            "n_params": int(sum(p.numel() for p in params)), "samples": samples, "target_rel_se": target_rel_se,
            "se_reached": None if target_rel_se is None else bool(n > 1 and _relative_se(samples) <= target_rel_se)}


def _relative_se(samples: Sequence[float]) -> float:
    """Standard error of the mean over |mean| (inf for a zero mean or one sample)."""
    mean = abs(float(np.mean(samples)))
    if len(samples) < 2 or mean == 0:
        return math.inf
    return float(np.std(samples, ddof=1) / math.sqrt(len(samples))) / mean


def top_eigenvalue(loss_terms: LossTerms, params: Sequence[torch.Tensor], iters: int = 20, tol: float = 1e-3,
                   generator: torch.Generator | None = None) -> dict:
    """Largest-magnitude Hessian eigenvalue by power iteration.

    Returns:
        {"eigenvalue": lambda, "iterations": iterations run, "converged": relative change < tol}.
    """
    generator = generator or torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=generator).to(p) for p in params]
    scale = math.sqrt(_inner(v, v))
    v = [x / scale for x in v]
    eigen, converged, it = 0.0, False, 0
    for it in range(1, iters + 1):  # noqa: B007 - `it` is reported
        hv = hessian_vector_product(loss_terms, params, v)
        new = _inner(v, hv)
        size = math.sqrt(_inner(hv, hv))
        if size == 0:
            eigen, converged = 0.0, True
            break
        v = [h / size for h in hv]
        if it > 1 and abs(new - eigen) <= tol * (abs(eigen) + 1e-12):
            eigen, converged = new, True
            break
        eigen = new
    return {"eigenvalue": eigen, "iterations": it, "converged": converged}


def filter_normalized_direction(params: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """A random direction with each filter's norm equal to the weight filter's norm (Li et al. 2018).

    Args:
        params: P weight tensors; a "filter" is a slice along axis 0 of a tensor with >= 2 axes.
        generator: CPU generator (same seed + same architecture = same raw draws).
    Returns:
        P tensors; 1-axis tensors (biases, norm scales) get zeros.
    """
    out = []
    for p in params:
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        w = p.detach().double().cpu()
        if p.dim() <= 1:
            d.zero_()
        else:
            d_norm = d.reshape(d.shape[0], -1).norm(dim=1).clamp(min=1e-12)
            w_norm = w.reshape(w.shape[0], -1).norm(dim=1)
            d.mul_((w_norm / d_norm).reshape(-1, *([1] * (d.dim() - 1))))
        out.append(d.to(p))
    return out


@torch.no_grad()
def _shifted(params, directions, coefs, loss_eval) -> float:
    originals = [p.detach().clone() for p in params]
    try:
        for p, *ds in zip(params, *directions, strict=True):
            for c, d in zip(coefs, ds, strict=True):
                if c:
                    p.add_(d, alpha=c)
        return float(loss_eval())
    finally:
        for p, o in zip(params, originals, strict=True):
            p.copy_(o)


def landscape_1d(loss_eval: Callable[[], float], params: Sequence[torch.Tensor], direction: Sequence[torch.Tensor],
                 alphas: Sequence[float]) -> np.ndarray:
    """L(theta + a d) for each a in `alphas` -> `[A]` (parameters restored exactly)."""
    return np.array([_shifted(params, [direction], [a], loss_eval) for a in alphas])


def landscape_2d(loss_eval: Callable[[], float], params: Sequence[torch.Tensor], d1: Sequence[torch.Tensor],
                 d2: Sequence[torch.Tensor], alphas: Sequence[float], betas: Sequence[float]) -> np.ndarray:
    """L(theta + a d1 + b d2) -> `[A, B]` (row i: alphas[i]); parameters restored exactly."""
    return np.array([[_shifted(params, [d1, d2], [a, b], loss_eval) for b in betas] for a in alphas])
