"""From window probabilities to document scores: a document is as bad as its worst window.

Taking the maximum (not the mean) is what keeps a short instruction hidden in a long page
from being averaged away; the worst window's character span tells the reader where it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alknet_firewall.codebook import Codebook
from alknet_firewall.features import WindowFeatures


@dataclass(frozen=True)
class DocumentScores:
    """Per document and signal: the worst window's probability and its character span."""

    probability: np.ndarray  # (docs, signals); 0 for a document without windows
    span: np.ndarray  # (docs, signals, 2)
    has_windows: np.ndarray  # (docs,) bool

    def score(self) -> np.ndarray:
        return np.asarray(self.probability.max(axis=1, initial=0.0))


def score_documents(codebook: Codebook, features: WindowFeatures) -> DocumentScores:
    """Max-pool window probabilities per document and signal."""
    n_docs, n_signals = features.n_docs, len(codebook.signals)
    probability = np.zeros((n_docs, n_signals), dtype=np.float64)
    span = np.zeros((n_docs, n_signals, 2), dtype=np.int64)
    has_windows = np.zeros(n_docs, dtype=bool)
    if len(features.doc) == 0:
        return DocumentScores(probability, span, has_windows)
    window_p = codebook.window_probabilities(features.views)
    has_windows[features.doc] = True
    for signal in range(n_signals):
        # sort by (doc, -p): the first window of each doc is its worst
        order = np.lexsort((-window_p[:, signal], features.doc))
        first = np.ones(order.size, dtype=bool)
        first[1:] = features.doc[order[1:]] != features.doc[order[:-1]]
        worst = order[first]
        probability[features.doc[worst], signal] = window_p[worst, signal]
        span[features.doc[worst], signal] = features.spans[worst]
    return DocumentScores(probability, span, has_windows)


def document_scores(codebook: Codebook, features: WindowFeatures, docs: np.ndarray) -> np.ndarray:
    """Overall score (max over signals and windows) of the chosen documents."""
    return np.asarray(score_documents(codebook, features).score()[docs])
