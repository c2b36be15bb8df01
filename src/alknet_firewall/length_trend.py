"""How a view drifts with window length, and taking that drift out.

A window of three tokens has a mean state and an attention split unlike any 128-token
window, whatever it says: fewer document tokens draw less of the last token's attention,
and a mean over a few states sits far from the mean over many. Densities fitted mostly on
long windows read that shift as evidence, so short benign texts (greetings, names) scored
as attacks and short attacks as benign. Each view dimension gets a benign trend over log
window tokens, fitted by least squares, and every window is scored on what is left.
"""

from __future__ import annotations

import numpy as np

# Not a view of the model: each window's count of text tokens, (windows, 1), kept among the
# views so that it follows them through selections and concatenations.
WINDOW_TOKENS = "tokens"


def trend_inputs(tokens: np.ndarray) -> np.ndarray:
    """(windows, 2): an intercept and log(window tokens)."""
    log_tokens = np.log(np.maximum(tokens.reshape(-1), 1.0))
    return np.stack([np.ones_like(log_tokens), log_tokens], axis=1)


def fit_length_trend(vectors: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(2, width) least-squares intercept and slope of every dimension over log tokens;
    the caller passes benign windows only, so an attack's departure is kept."""
    solution, *_ = np.linalg.lstsq(trend_inputs(tokens), vectors.astype(np.float64), rcond=None)
    return np.asarray(solution, dtype=np.float32)


def remove_length_trend(vectors: np.ndarray, trend: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    result: np.ndarray = vectors - trend_inputs(tokens).astype(np.float32) @ trend
    return result
