"""Time of the vectorised patient bootstrap: 25 labels x 1000 resamples x 2000 samples.

Prints `bootstrap_25x1000x2000_seconds=<s>`.
"""

from __future__ import annotations

import time

import numpy as np

from clinfuse.evaluation.bootstrap import bootstrap_label_cis
from clinfuse.pipeline.settings.evaluate import EvaluateSettings


def main() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((2000, 25)) < 0.15).astype(int)
    s = rng.random((2000, 25)) + 0.4 * y
    patients = np.arange(2000) // 2
    settings = EvaluateSettings()  # the evaluate stage's defaults: 1000 resamples, 95 %
    t = time.perf_counter()
    bootstrap_label_cis(y, s, patients, [f"label{k}" for k in range(25)], settings.n_resamples, settings.seed,
                        settings.ci_level, min_events=settings.min_events)
    print(f"bootstrap_25x1000x2000_seconds={time.perf_counter() - t:.2f}")


if __name__ == "__main__":
    main()
