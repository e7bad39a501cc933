"""Inference with a trained run: rebuild its model, pick its prediction logits, predict a split.

Shared by training (validation), evaluate, analyze, register and `clinfuse predict`, so that
every consumer turns a run folder into probabilities the same way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from clinfuse.etl.errors import InputError
from clinfuse.models.build import build_model
from clinfuse.models.encoders.images import channels_last_
from clinfuse.models.fusion import FusionModel
from clinfuse.models.precision import upcast

from .checkpoints import CHECKPOINT_BEST, load_checkpoint
from .data import Cohort, SplitTensors, split_tensors
from .runs import MODEL_KEYS, read_run_config
from .settings.methods import MethodConfig


def prediction_head(method: MethodConfig) -> str:
    """Which logits a run predicts with: "fused", or "unimodal:<m>" for the unimodal method."""
    if method.method == "unimodal":
        return f"unimodal:{method.options.get('modality')}"
    return "fused"


def select_logits(out, head: str) -> torch.Tensor:
    """The `[B, K]` logits a run predicts with, from a `FusionOutput`."""
    if head == "fused":
        return out.fused
    return out.unimodal[head.split(":", 1)[1]]


def probabilities(logits: torch.Tensor, task_type: str) -> torch.Tensor:
    """`[B, K]` probabilities: softmax for multiclass, sigmoid per label otherwise.

    Half-precision (bf16 autocast) logits are upcast to float32; float32 and float64 keep their dtype.
    """
    logits = upcast(logits)
    return torch.softmax(logits, -1) if task_type == "multiclass" else torch.sigmoid(logits)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when enabled; a no-op context elsewhere."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_tensors(
    model: FusionModel, tensors: SplitTensors, task_type: str, head: str = "fused", batch_size: int = 256,
    bf16: bool = False,
) -> np.ndarray:
    """Probabilities `[N, K]` for a split held in memory (in row order)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for batch in tensors.batches(batch_size):
        with autocast(device, bf16):
            logits = select_logits(model(batch["inputs"], batch["present"]), head)
        out.append(probabilities(logits, task_type).cpu())
    if not out:
        return np.zeros((0, model.num_outputs), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32)


def load_trained_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[FusionModel, dict]:
    """Rebuild a run's model from config.yaml and load its best weights."""
    run_dir = Path(run_dir)
    config_path, best = run_dir / "config.yaml", run_dir / CHECKPOINT_BEST
    for p in (config_path, best):
        if not p.is_file():
            raise InputError(f"{p}: missing; expected a finished training run folder")
    config = read_run_config(run_dir, MODEL_KEYS)
    shapes = {m: tuple(s) for m, s in config["input_shapes"].items()}
    model = build_model(config["encoders"], config["modalities"], shapes, len(config["label_names"]),
                        method=config["method"]["method"], task_type=config["task_type"],
                        options=config["method"]["options"])
    # loaded on the host, then moved: a checkpoint saved on any device (a GPU's) loads on any machine
    model.load_state_dict(load_checkpoint(best, "cpu")["model"])
    return channels_last_(model.to(device).eval(), device), config


def predict_split(run_dir: str | Path, cohort: Cohort, split: str, device: str = "cpu", batch_size: int = 256,
                  withhold: tuple[str, ...] = ()):
    """(rows, probabilities `[n, K]`) of a finished run on one split of a cohort.

    `withhold` names modalities to hide from every sample: their presence flags are
    False and their inputs zero, exactly as the ETL writes a sample without them.
    """
    model, config = load_trained_model(run_dir, device)
    tensors = split_tensors(cohort, split, device)
    for m in withhold:
        tensors.present[m] = torch.zeros_like(tensors.present[m])
        tensors.inputs[m] = torch.zeros_like(tensors.inputs[m])
    probs = predict_tensors(model, tensors, cohort.task_type, config["prediction_head"], batch_size)
    return tensors.rows, probs
