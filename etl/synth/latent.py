"""The generative model behind the synthetic cohorts.

Every synthetic ICU patient has four latent factors h ~ N(0, I_4):

  h0  haemodynamic instability  -> seen by the EHR only (heart rate, BP, lactate-like drift)
  h1  cardiopulmonary load      -> seen by the EHR (resp. rate, SpO2) and, weakly, the CXR
                                   (heart size)
  h2  neurological / metabolic  -> seen by the EHR (GCS, glucose, temperature)
  h3  parenchymal lung disease  -> seen by the CXR only (opacities)

Labels are logistic in the factors: phenotype k has
  P(y_k = 1) = sigmoid(b_k + w_k . h), with w_k drawn once (fixed seed, independent of the
  generator's seed so the "biology" is the same for every cohort) and b_k set so prevalences
  span roughly 5-35 %; in-hospital mortality has logit -2.4 + 1.1 h0 + 0.7 h1 + 0.5 h3.
The EHR carries h0-h2 strongly and hour by hour (easy to learn), the CXR carries h1 weakly
and h3 (harder to learn from pixels): each modality holds signal the other lacks, and the
EHR signal is learned faster, which is the modality imbalance MASAM addresses.

ADNI subjects have their own factors (see etl/synth/adni.py).
"""

from __future__ import annotations

import numpy as np

N_FACTORS = 4
_BIOLOGY_SEED = 20240601  # fixed: the label model is the same for every cohort seed


def phenotype_weights(n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights `[K, 4]` and biases `[K]` of the phenotype logits."""
    rng = np.random.default_rng(_BIOLOGY_SEED)
    w = rng.normal(0.0, 0.9, size=(n_labels, N_FACTORS))
    # each phenotype leans on one EHR factor and on the CXR-only factor, so both modalities matter
    w[np.arange(n_labels), np.arange(n_labels) % 3] += 1.2
    w[:, 3] += rng.choice([0.0, 0.9], size=n_labels)
    b = rng.uniform(-3.4, -1.2, size=n_labels)
    return w, b


def mortality_logit(h: np.ndarray) -> np.ndarray:
    """`[N]` logits of in-hospital death from factors `[N, 4]`."""
    return -2.4 + 1.1 * h[:, 0] + 0.7 * h[:, 1] + 0.5 * h[:, 3]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
