"""Method registry: name -> class with `step(batch)`. Adding a baseline is one
module plus one line here.
"""

from __future__ import annotations

from .base import Method
from .drfuse import DrFuse
from .late_fusion import LateFusion
from .masam import MASAM
from .medfuse import MedFuse
from .sam import SAM
from .unimodal import Unimodal

METHODS: dict[str, type[Method]] = {
    "late_fusion": LateFusion,
    "unimodal": Unimodal,
    "sam": SAM,
    "masam": MASAM,
    "medfuse": MedFuse,
    "drfuse": DrFuse,
}

__all__ = ["METHODS", "Method"]
