"""Named sizes of the synthetic export: the demo, and MIMIC-IV v3.1 / MIMIC-CXR-JPG 2.1.0 at full, 1/10 and 1/100.

Full-size row counts are the real releases' (patients, admissions, ICU stays and
chartevents of MIMIC-IV v3.1; metadata rows, studies and patients of MIMIC-CXR-JPG
2.1.0). The smaller sizes divide every count (rounded); films keep their real
resolution at every size.
"""

from __future__ import annotations

from dataclasses import dataclass

SIZE_NAMES = ("demo", "hundredth", "tenth", "full")


@dataclass(frozen=True)
class ExportSize:
    """Target row counts of a sized export (every one is met exactly)."""

    name: str
    patients: int
    admissions: int
    icustays: int
    chartevents: int
    cxr_images: int
    cxr_studies: int
    cxr_patients: int
    film_height: int = 3056  # MIMIC-CXR-JPG films are about 2,500 x 3,000 px
    film_width: int = 2544
    # share of ICU stays given an AP film inside [intime, intime + 48 h]: about 10,800 paired
    # phenotype stays of 94,458 in the real data (the demo's generator uses 0.82)
    p_window_ap: float = 0.15


FULL = ExportSize("full", patients=364_627, admissions=546_028, icustays=94_458, chartevents=432_997_491,
                  cxr_images=377_110, cxr_studies=227_835, cxr_patients=65_379)


def export_size(name: str) -> ExportSize:
    """The named size; 'demo' has no fixed counts (the generator's own) and is refused here."""
    divisors = {"full": 1, "tenth": 10, "hundredth": 100}
    if name not in divisors:
        raise ValueError(f"size must be one of {', '.join(divisors)}, got {name!r}")
    d = divisors[name]
    if d == 1:
        return FULL

    def part(n):
        return max(1, round(n / d))

    return ExportSize(name, part(FULL.patients), part(FULL.admissions), part(FULL.icustays),
                      part(FULL.chartevents), part(FULL.cxr_images), part(FULL.cxr_studies),
                      part(FULL.cxr_patients))
