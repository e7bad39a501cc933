"""The one precision rule for computed quantities: only half precision is upcast.

Under bf16/fp16 autocast, logits, features and gradients arrive in half precision; losses,
probabilities, cosines and norms are computed from their float32 upcast. A float32 or float64
model keeps its own dtype end to end: casting a float64 model's tensors to float32 (`.float()`)
would silently lose precision.
"""

from __future__ import annotations

import torch

HALF = (torch.float16, torch.bfloat16)


def upcast(t: torch.Tensor) -> torch.Tensor:
    """`t` as float32 when it is fp16/bf16; any other dtype (float32, float64, integers) unchanged."""
    return t.float() if t.dtype in HALF else t
