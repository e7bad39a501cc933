"""Method registry: name -> class with `step(batch)`. Adding a baseline is one
module plus one line here.
"""

from __future__ import annotations

from .aug import AUG
from .base import Method
from .late_fusion import LateFusion
from .masam import MASAM
from .mla import MLA
from .mmpareto import MMPareto
from .sam import SAM
from .unimodal import Unimodal

METHODS: dict[str, type[Method]] = {
    "late_fusion": LateFusion,
    "unimodal": Unimodal,
    "sam": SAM,
    "masam": MASAM,
    "mla": MLA,
    "mmpareto": MMPareto,
    "aug": AUG,
}

__all__ = ["METHODS", "Method"]
