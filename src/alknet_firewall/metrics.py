"""Detection metrics: AUROC, true-positive rate at a fixed false-positive rate, and the
false-positive rate at a threshold. Undefined values are None, never a made-up number."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float | None:
    """Share of attacks scored above the benign (1 - fpr) quantile."""
    benign, attacks = scores[labels == 0], scores[labels == 1]
    if benign.size == 0 or attacks.size == 0:
        return None
    threshold = np.quantile(benign, 1.0 - fpr)
    return float((attacks > threshold).mean())


def detection_metrics(
    labels: np.ndarray, scores: np.ndarray, flag_threshold: float
) -> dict[str, float | int | None]:
    """AUROC, TPR at 1% and 0.1% FPR, and flag rates at the given threshold."""
    benign, attacks = scores[labels == 0], scores[labels == 1]
    both = benign.size > 0 and attacks.size > 0
    return {
        "benign": int(benign.size),
        "attacks": int(attacks.size),
        "auroc": float(roc_auc_score(labels, scores)) if both else None,
        "tpr_at_1pct_fpr": tpr_at_fpr(labels, scores, 0.01),
        "tpr_at_0.1pct_fpr": tpr_at_fpr(labels, scores, 0.001),
        "fpr_at_flag": float((benign >= flag_threshold).mean()) if benign.size else None,
        "tpr_at_flag": float((attacks >= flag_threshold).mean()) if attacks.size else None,
    }
