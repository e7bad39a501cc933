"""Method registry: name -> class with `step(batch)`. Adding a baseline is one
module plus one line here.
"""

from __future__ import annotations

from .agm import AGM
from .aug import AUG
from .base import Method
from .drfuse import DrFuse
from .gblend import GBlend
from .igm import IGM
from .inforeg import InfoReg
from .late_fusion import LateFusion
from .masam import MASAM
from .medfuse import MedFuse
from .mla import MLA
from .mmpareto import MMPareto
from .ogm_ge import OGMGE
from .pmr import PMR
from .sam import SAM
from .unimodal import Unimodal

METHODS: dict[str, type[Method]] = {
    "late_fusion": LateFusion,
    "unimodal": Unimodal,
    "sam": SAM,
    "masam": MASAM,
    "igm": IGM,
    "ogm_ge": OGMGE,
    "agm": AGM,
    "gblend": GBlend,
    "mla": MLA,
    "mmpareto": MMPareto,
    "aug": AUG,
    "pmr": PMR,
    "inforeg": InfoReg,
    "medfuse": MedFuse,
    "drfuse": DrFuse,
}

__all__ = ["METHODS", "Method"]
