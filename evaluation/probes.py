"""Linear probes on frozen encoder features (paper Fig. 4).

A logistic-regression head (scikit-learn, L2, lbfgs) is fitted on training-split features
and scored on test features: how much task information an encoder carries, whatever
head the fusion method trained on top of it. Features are standardised with TRAINING
statistics only. Multilabel/binary tasks get one binary probe per label (a label with a
single class in the training features gets the training prevalence as its constant
score, counted in `constant_labels`); multiclass gets one multinomial probe.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression


def probe_probabilities(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, task_type: str,
                        num_outputs: int, c: float = 1.0, max_iter: int = 200) -> tuple[np.ndarray, list[int]]:
    """Fit on train, predict test probabilities.

    Args:
        x_train: `[N, H]` features; y_train: `[N, K]` 0/1 or `[N]` classes.
        x_test: `[M, H]` features.
        task_type: "multilabel", "binary" or "multiclass".
        num_outputs: K (labels, or classes for multiclass).
        c: inverse L2 strength.
        max_iter: lbfgs iterations.
    Returns:
        (`[M, K]` probabilities, indices of labels scored by a constant).
    """
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 0, std, 1.0)
    a, b = (x_train - mean) / std, (x_test - mean) / std
    if task_type == "multiclass":
        probs = np.zeros((len(b), num_outputs))
        classes = np.unique(y_train)
        if len(classes) == 1:
            probs[:, int(classes[0])] = 1.0
            return probs, list(range(num_outputs))
        clf = LogisticRegression(C=c, max_iter=max_iter).fit(a, y_train)
        probs[:, clf.classes_.astype(int)] = clf.predict_proba(b)
        return probs, [k for k in range(num_outputs) if k not in set(clf.classes_.astype(int))]
    y_train = np.asarray(y_train).reshape(len(a), -1)
    probs = np.zeros((len(b), y_train.shape[1]))
    constant = []
    for k in range(y_train.shape[1]):
        yk = y_train[:, k].astype(int)
        if yk.min() == yk.max():
            probs[:, k] = yk.mean()
            constant.append(k)
            continue
        probs[:, k] = LogisticRegression(C=c, max_iter=max_iter).fit(a, yk).predict_proba(b)[:, 1]
    return probs, constant
