"""One-dimensional densities fitted with smoothing splines, stored as log-density tables.

Each density lives on a fixed grid: a histogram with a small prior, its log smoothed by a
cubic smoothing spline, renormalised. Scoring is a linear interpolation in the table, so a
codebook is plain arrays (safetensors) and evaluation is vectorised numpy.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import make_smoothing_spline


def grid_bounds(values: np.ndarray, margin: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Per-column grid ends: the 0.1% and 99.9% quantiles widened by `margin` of the range."""
    low, high = np.quantile(values, [0.001, 0.999], axis=0)
    span = np.maximum(high - low, 1e-6)
    return low - margin * span, high + margin * span


def fit_log_density(
    values: np.ndarray,
    low: float,
    high: float,
    points: int,
    smoothing: float,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Smoothed log-density of `values` at `points` evenly spaced grid nodes in [low, high].

    Values outside the grid count at its ends. The prior (one pseudo-observation spread
    evenly) keeps empty bins finite, so a value unseen in training gives a bounded score.
    `weights` (one per value, mean 1 so that the prior weighs the same) make some values
    count more than others.
    """
    edges = np.linspace(low, high, points + 1)
    counts, _ = np.histogram(np.clip(values, low, high), bins=edges, weights=weights)
    width = (high - low) / points
    prior = 1.0 / points
    density = (counts + prior) / ((counts.sum() + 1.0) * width)
    centres = (edges[:-1] + edges[1:]) / 2
    # lam scales with the grid spacing^3 so `smoothing` means the same at any grid size.
    spline = make_smoothing_spline(centres, np.log(density), lam=smoothing * width**3 * points)
    nodes = np.linspace(low, high, points)
    log_density = spline(nodes)
    # Renormalise: smoothing the log shifts the mass a little.
    log_density -= np.log(np.exp(log_density).sum() * (high - low) / (points - 1))
    return np.asarray(log_density, dtype=np.float32)


def lookup(table: np.ndarray, low: np.ndarray, high: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Interpolated log-densities of `values` (rows, components) in `table` (components,
    points) whose grids span [low, high] per component. Returns (rows, components)."""
    points = table.shape[-1]
    position = np.clip((values - low) / (high - low) * (points - 1), 0.0, points - 1)
    # the last node has no right neighbour: interpolate from the one before with frac 1
    left = np.minimum(np.floor(position), points - 2).astype(np.int64)
    frac = (position - left).astype(np.float32)
    components = np.arange(values.shape[1])
    left_values = table[components, left]
    result: np.ndarray = left_values + (table[components, left + 1] - left_values) * frac
    return result
