"""Pieces every method shares: losses, gradient vector algebra, RNG and BatchNorm guards.

A method owns one optimisation step: `step(batch) -> dict[str, Tensor]` (0-d
tensors, detached, on the device: no host sync). Batches follow the contract
`{"inputs": {m: x}, "present": {m: [B] bool}, "y": y}`.

A method also owns its network and so its prediction rule: `build_model`
(a classmethod, called by the trainer and again when a finished run is loaded
for evaluation, export and `predict`) returns a module whose forward gives a
`FusionOutput`; its `fused` logits ARE the method's prediction. The default is
the concat-fusion `FusionModel`; a method without a fusion head returns a model
whose `fused` is its rule (e.g. `average_probabilities` of the unimodal heads).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import torch
from torch import nn

from ..distributed import average_gradients
from ..fusion import FusionModel, FusionOutput
from ..losses import task_loss
from ..precision import upcast  # noqa: F401 - re-exported: methods import it from here

Tensors = list[torch.Tensor]


# --- gradient-vector algebra over lists of tensors (no host syncs) ----------------------


def _full_precision(a: Tensors) -> Tensors:
    """Half-precision (fp16/bf16) tensors as float32; float32 and float64 unchanged."""
    return [upcast(t) for t in a]


def _no_autocast(a: Tensors):
    """Autocast off for the vector algebra: cosines and norms (MASAM's gamma, its eps) stay in fp32
    even when a caller runs the step under bf16 autocast."""
    return autocast_off(a[0]) if a else contextlib.nullcontext()


def autocast_off(t: torch.Tensor):
    """Autocast off on `t`'s device: the gradient-space products a method computes itself (IGM's
    `g T_k`, MLA's projector) stay in the parameters' precision when the trainer runs the step under
    bf16 autocast, which would otherwise return them in bf16."""
    return torch.autocast(t.device.type, enabled=False)


def dot(a: Tensors, b: Tensors) -> torch.Tensor:
    """<a, b> over all tensors, as a 0-d tensor (at least float32)."""
    with _no_autocast(a):
        return torch.stack([t.sum() for t in torch._foreach_mul(_full_precision(a), _full_precision(b))]).sum()


def norm(a: Tensors) -> torch.Tensor:
    """||a||_2 over all tensors (flattened and concatenated), as a 0-d tensor (at least float32)."""
    with _no_autocast(a):
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(_full_precision(a))))


def cosine(a: Tensors, b: Tensors, eps: float = 1e-12) -> torch.Tensor:
    """cos(a, b) over the flattened concatenation of the tensors (at least float32)."""
    return dot(a, b) / (norm(a) * norm(b)).clamp(min=eps)


def grads_or_zeros(grads, params: Tensors) -> Tensors:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


# --- option checks -----------------------------------------------------------------------


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a float, or ValueError "name must be in [low, high) (got v)" naming the option."""
    v = float(value)
    bad = v != v or (low is not None and (v <= low if low_open else v < low)) or (
        high is not None and (v >= high if high_open else v > high))
    if bad:
        lo = "(-inf" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {lo}, {hi} (got {value!r})")
    return v


def option(cls, options: dict, name: str):
    """A method option from its config, else the constructor's default (defaults live in one place)."""
    return options.get(name, inspect.signature(cls.__init__).parameters[name].default)


# --- determinism guards for a second forward pass ---------------------------------------


def rng_state(device: torch.device):
    """CPU (and, on CUDA, device) RNG state, for replaying dropout masks."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def set_rng_state(state, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Run a pass without changing BatchNorm running statistics (saved and restored)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [[b.clone() for b in m.buffers()] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, bufs in zip(norms, saved, strict=True):
                for b, s in zip(m.buffers(), bufs, strict=True):
                    b.copy_(s)


# --- the method interface ------------------------------------------------------------


class Method:
    """Base class. Subclasses implement `step`.

    Args:
        model: the FusionModel being trained.
        optimizer: the base optimizer (AdamW, SGD, ...) over all model parameters.
        task_type: "multilabel", "binary" or "multiclass".
        lambda_m: weight of each unimodal loss in L_total = L_fuse + sum_m lambda_m L_m
            (a number for all modalities or a {modality: weight} mapping).
    """

    name = "base"

    @classmethod
    def build_model(
        cls, encoders: dict[str, nn.Module], num_outputs: int, task_type: str, options: dict
    ) -> nn.Module:
        """The network this method trains and predicts with.

        Args:
            encoders: modality -> encoder (each has `out_dim`), in the cohort's order.
            num_outputs: K, the number of logits.
            task_type: "multilabel", "binary" or "multiclass".
            options: the method config's options (the same keywords `__init__` gets).
        """
        return FusionModel(encoders, num_outputs)

    @classmethod
    def check_task(cls, task_type: str) -> None:
        """Raise ValueError naming the reason when the method is undefined for a task type."""
        return None

    def __init__(self, model: FusionModel, optimizer: torch.optim.Optimizer, task_type: str, lambda_m=1.0):
        self.model = model
        self.optimizer = optimizer
        self.task_type = task_type
        if isinstance(lambda_m, dict):
            unknown = set(lambda_m) - set(model.modalities)
            if unknown:
                raise ValueError(f"lambda_m names unknown modalities {sorted(unknown)}")
            self.lambdas = {m: float(lambda_m.get(m, 1.0)) for m in model.modalities}
        else:
            self.lambdas = {m: float(lambda_m) for m in model.modalities}
        for m, weight in self.lambdas.items():
            check_range(f"lambda_m[{m}]", weight, 0.0)

    # losses
    def fusion_loss(self, out: FusionOutput, batch) -> torch.Tensor:
        return task_loss(out.fused, batch["y"], self.task_type)

    def unimodal_losses(self, out: FusionOutput, batch) -> dict[str, torch.Tensor]:
        """L_m, averaged over the samples where modality m is present."""
        return {
            m: task_loss(out.unimodal[m], batch["y"], self.task_type, batch["present"][m])
            for m in self.model.modalities
        }

    def total_loss(self, l_fuse, l_uni) -> torch.Tensor:
        return l_fuse + sum(self.lambdas[m] * l_uni[m] for m in self.model.modalities)

    def loss_metrics(self, l_total, l_fuse, l_uni) -> dict[str, torch.Tensor]:
        metrics = {"loss_total": l_total.detach(), "loss_fuse": l_fuse.detach()}
        metrics.update({f"loss_{m}": loss.detach() for m, loss in l_uni.items()})
        return metrics

    def forward_losses(self, batch) -> tuple[FusionOutput, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Train mode, gradients zeroed, one forward: (out, L_fuse, {m: L_m}, L_total)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(batch["inputs"], batch["present"])
        l_fuse, l_uni = self.fusion_loss(out, batch), self.unimodal_losses(out, batch)
        return out, l_fuse, l_uni, self.total_loss(l_fuse, l_uni)

    def apply_gradients(self, averaged: bool = False) -> None:
        """Average `p.grad` over data-parallel ranks (a no-op in one process), then step the optimizer.

        Every method ends its step here rather than calling `optimizer.step()` itself, so that
        under torchrun all ranks apply the same update (see `models.distributed`).

        Args:
            averaged: the method has already rank-averaged every `p.grad` it set (in one
                collective with its own statistics, `models.distributed.all_reduce_mean_`),
                so only the optimizer steps: each gradient is averaged exactly once.
        """
        if not averaged:
            average_gradients(self.model.parameters())
        self.optimizer.step()

    def logits(self, out: FusionOutput) -> torch.Tensor:
        """The prediction a method's model makes (the fused logits unless overridden)."""
        return out.fused

    def encoder_params(self, modality: str) -> Tensors:
        return [p for p in self.model.encoders[modality].parameters() if p.requires_grad]

    def step(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # optional per-epoch hooks (the trainer calls them around each epoch's batches)
    def on_epoch_start(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        """Before epoch `epoch` (0-based)'s first step; returns metrics the trainer logs as `epoch/<key>`.

        Args:
            epoch: the epoch about to run, counted from 0.
            train_tensors: the training split (`pipeline.data.SplitTensors`: `.batches(batch_size,
                generator)`, `.batch(index)`, `len()`, `.groups`).
        """
        return {}

    def on_epoch_end(self, epoch: int, train_tensors) -> dict[str, torch.Tensor]:
        """After epoch `epoch`'s last step, before the scheduler steps; metrics as for `on_epoch_start`."""
        return {}

    # resumable state (methods with moving averages override)
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None
