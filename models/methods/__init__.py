"""Method registry: name -> class with `step(batch)`. Adding a baseline is one
module plus one line here.
"""

from __future__ import annotations

from .base import Method
from .inforeg import InfoReg
from .late_fusion import LateFusion
from .masam import MASAM
from .pmr import PMR
from .sam import SAM
from .unimodal import Unimodal

METHODS: dict[str, type[Method]] = {
    "late_fusion": LateFusion,
    "unimodal": Unimodal,
    "sam": SAM,
    "masam": MASAM,
    "pmr": PMR,
    "inforeg": InfoReg,
}

__all__ = ["METHODS", "Method"]
