"""Fitting a codebook from labelled window activations.

Documents are split three ways (seeded, stratified by file): densities are fitted on the
first part, the per-signal combiners on the second, and thresholds are calibrated on the
benign documents of the third, which neither of the other steps saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from alknet_firewall.codebook import Codebook, CodebookMeta, Thresholds
from alknet_firewall.config import CodebookSettings, WindowSettings
from alknet_firewall.corpus import LabelledRows
from alknet_firewall.density import fit_log_density, grid_bounds
from alknet_firewall.features import WindowFeatures
from alknet_firewall.length_trend import WINDOW_TOKENS, fit_length_trend, remove_length_trend
from alknet_firewall.metrics import detection_metrics
from alknet_firewall.payloads import Span, window_role
from alknet_firewall.scoring import document_scores

MAX_SVD_ROWS = 20_000


@dataclass(frozen=True)
class ModelIdentity:
    model_id: str
    weight_digest: str
    layers: list[int]


def fit_codebook(
    features: WindowFeatures,
    rows: LabelledRows,
    model: ModelIdentity,
    windows: WindowSettings,
    settings: CodebookSettings,
) -> Codebook:
    """Fit every part of a codebook; validation metrics go into its metadata."""
    if features.n_docs != len(rows):
        raise ValueError(f"{features.n_docs} documents of features for {len(rows)} rows")
    if not any(rows.labels) or all(rows.labels):
        raise ValueError("fitting needs both benign rows and attack rows")
    kinds = [signal_of(kind, settings) for kind in rows.kinds]
    signals = sorted({kind for kind, label in zip(kinds, rows.labels, strict=True) if label})
    doc_class = np.array(
        [
            signals.index(kind) + 1 if label else 0
            for kind, label in zip(kinds, rows.labels, strict=True)
        ]
    )
    part = split_documents(rows.files, settings.calibration_fraction, settings.seed)
    window_class = window_classes(features, doc_class, rows.payloads)
    window_part = part[features.doc]

    tensors: dict[str, np.ndarray] = {}
    density_rows = (window_part == 0) & (window_class >= 0)
    missing = sorted(set(settings.views) - set(features.views))
    if missing:
        raise ValueError(
            f"codebook.views asks for {missing}, which the model does not produce "
            f"(it gives {sorted(features.views)}): framed views need windows.framed = true "
            "and layer views a layer listed in model.layers"
        )
    tokens = features.views[WINDOW_TOKENS][density_rows]
    benign = window_class[density_rows] == 0
    weights = density_weights(features.doc[density_rows], settings)
    for name in settings.views:
        vectors = features.views[name][density_rows]
        if settings.length_adjust:
            trend = fit_length_trend(vectors[benign], tokens[benign])
            tensors[f"{name}.length_trend"] = trend
            vectors = remove_length_trend(vectors, trend, tokens)
        tensors |= fit_view(
            name, vectors, window_class[density_rows], len(signals) + 1, settings, weights
        )

    meta = CodebookMeta(
        model_id=model.model_id,
        weight_digest=model.weight_digest,
        layers=list(model.layers),
        framed=windows.framed,
        views=list(settings.views),
        novelty=settings.novelty,
        length_adjusted=settings.length_adjust,
        pooling=windows.pooling,
        window_size=windows.size,
        window_stride=windows.stride,
        signals=signals,
        rank=settings.rank,
        thresholds=Thresholds(flag=1.0, block=1.0),
        flag_fpr=settings.flag_fpr,
        block_fpr=settings.block_fpr,
        data_digest=rows.digest(),
    )
    draft = Codebook(meta, tensors)
    tensors |= fit_combiners(draft, features, window_class, part == 1, len(signals))
    codebook = Codebook(meta, tensors)

    held_out = np.flatnonzero(part == 2)
    scores = document_scores(codebook, features, held_out)
    labels = (doc_class[held_out] > 0).astype(int)
    benign_scores = scores[labels == 0]
    meta.thresholds = Thresholds(
        flag=float(np.quantile(benign_scores, 1.0 - settings.flag_fpr)),
        block=float(np.quantile(benign_scores, 1.0 - settings.block_fpr)),
    )
    meta.metrics = {
        "held_out_documents": len(held_out),
        **detection_metrics(labels, scores, meta.thresholds.flag),
    }
    return codebook


def signal_of(kind: str, settings: CodebookSettings) -> str:
    """The signal an attack row trains: its kind, or the one shared "attack" signal, which
    generalised better to attack sources left out of the fit (bench/EXPLORE.md)."""
    return kind if settings.signals == "per_kind" else "attack"


def density_weights(window_doc: np.ndarray, settings: CodebookSettings) -> np.ndarray:
    """Each density window's weight: 1, or with `density_weights = "document"` one over
    its document's count of density windows, so that every document weighs the same.

    Counted by window, a 2,000-token jailbreak template weighs as much as twenty
    one-window injections and a long cheat sheet as much as twenty chat messages: the
    densities then learn what long documents of a few sources look like. By document,
    held-out AUROC rose from 0.863 to 0.871 and TPR at 1% FPR from 20.4% to 25.9% (means
    of eight split seeds; bench/QUALITY.md, bench/EXPLORE.md twelfth stop)."""
    if settings.density_weights == "window":
        return np.ones(len(window_doc))
    _, inverse, counts = np.unique(window_doc, return_inverse=True, return_counts=True)
    return np.asarray(1.0 / counts[inverse])


def window_classes(
    features: WindowFeatures, doc_class: np.ndarray, payloads: Sequence[Span | None]
) -> np.ndarray:
    """Each window's class: its document's, except in documents whose payload is known,
    where windows without the payload are benign and those holding only a little of it
    are left out (-1)."""
    window_class: np.ndarray = doc_class[features.doc].copy()
    if not payloads:
        return window_class
    for index, (doc, span) in enumerate(zip(features.doc, features.spans, strict=True)):
        payload = payloads[doc]
        if payload is not None:
            role = window_role((int(span[0]), int(span[1])), payload)
            window_class[index] = doc_class[doc] if role == 1 else role
    return window_class


def split_documents(files: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Part per document: 0 densities, 1 combiners, 2 calibration; `fraction` of each file
    goes to parts 1 and 2 (half each)."""
    rng = np.random.default_rng(seed)
    part = np.zeros(len(files), dtype=np.int64)
    names = np.array(files)
    for name in sorted(set(files)):
        members = rng.permutation(np.flatnonzero(names == name))
        held = max(2, round(len(members) * fraction)) if len(members) >= 4 else 0
        part[members[: held // 2]] = 1
        part[members[held // 2 : held]] = 2
    return part


def fit_view(
    name: str,
    vectors: np.ndarray,
    classes: np.ndarray,
    n_classes: int,
    settings: CodebookSettings,
    weights: np.ndarray,
) -> dict[str, np.ndarray]:
    """Basis, per-component densities per class and residual statistics for one view.
    `weights` (per row, `density_weights`) weigh the rows in the densities only."""
    mean = vectors.mean(axis=0)
    # Standardise per dimension: a few residual-stream dimensions carry huge, uninformative
    # magnitudes that would otherwise take over the basis.
    scale = vectors.std(axis=0) + 1e-3
    standard = (vectors - mean) / scale
    if settings.discriminant:
        # The direction that best separates attacks from benign text leads the basis; the
        # principal axes of what is left of the vectors fill it up.
        direction = discriminant_axis(standard, classes, settings.seed)
        rest = standard - np.outer(standard @ direction, direction)
        axes = principal_axes(rest, classes, n_classes, settings.rank - 1, settings.seed)
        basis = np.concatenate([direction[:, None], axes], axis=1)
    else:
        basis = principal_axes(standard, classes, n_classes, settings.rank, settings.seed)
    coords = standard @ basis
    low, high = grid_bounds(coords)
    tables = np.zeros((n_classes, basis.shape[1], settings.grid_points), dtype=np.float32)
    for klass in range(n_classes):
        members = coords[classes == klass]
        member_weights = weights[classes == klass]
        if member_weights.size:  # mean 1 within the class: the prior weighs the same
            member_weights = member_weights / member_weights.mean()
        for component in range(basis.shape[1]):
            tables[klass, component] = fit_log_density(
                members[:, component],
                float(low[component]),
                float(high[component]),
                settings.grid_points,
                settings.smoothing,
                member_weights,
            )
    benign_residual = np.linalg.norm(standard - coords @ basis.T, axis=1)[classes == 0]
    log_residual = np.log(benign_residual + 1e-6)
    prefix = f"{name}."
    return {
        prefix + "mean": mean.astype(np.float32),
        prefix + "scale": scale.astype(np.float32),
        prefix + "basis": basis.astype(np.float32),
        prefix + "low": low.astype(np.float32),
        prefix + "high": high.astype(np.float32),
        prefix + "log_density": tables,
        prefix + "residual_stats": np.array(
            [log_residual.mean(), log_residual.std() + 1e-6], dtype=np.float32
        ),
    }


def principal_axes(
    standard: np.ndarray, classes: np.ndarray, n_classes: int, rank: int, seed: int
) -> np.ndarray:
    """Top right-singular vectors of class-balanced rows, so the large benign share does
    not crowd the attack directions out of the basis."""
    members = [np.flatnonzero(classes == klass) for klass in range(n_classes)]
    sample = standard[balanced_sample(members, MAX_SVD_ROWS // n_classes, seed)]
    _, _, vt = np.linalg.svd(sample - sample.mean(axis=0), full_matrices=False)
    return vt[: min(rank, vt.shape[0])].T


def balanced_sample(groups: list[np.ndarray], per_group: int, seed: int) -> np.ndarray:
    """At most `per_group` indices drawn from each non-empty group, seeded."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.choice(g, size=min(per_group, g.size), replace=False) for g in groups if g.size]
    )


def discriminant_axis(standard: np.ndarray, classes: np.ndarray, seed: int) -> np.ndarray:
    """Unit weight vector of a strongly regularised logistic regression, attack vs benign,
    on a class-balanced sample of rows."""
    members = [np.flatnonzero(classes == 0), np.flatnonzero(classes > 0)]
    chosen = balanced_sample(members, MAX_SVD_ROWS // 2, seed)
    model = LogisticRegression(C=0.05, class_weight="balanced", max_iter=2000)
    model.fit(standard[chosen], classes[chosen] > 0)
    weights = model.coef_[0]
    return np.asarray(weights / np.linalg.norm(weights))


def fit_combiners(
    draft: Codebook,
    features: WindowFeatures,
    all_window_class: np.ndarray,
    in_part: np.ndarray,
    n_signals: int,
) -> dict[str, np.ndarray]:
    """Per signal, a logistic regression on the view scores: benign windows against the
    most telling window of each document of that signal (an attack document's other
    windows may be perfectly ordinary text, unless its payload is known)."""
    windows = np.flatnonzero(in_part[features.doc])
    layer_scores = draft.view_scores(features.rows(windows).views)
    per_signal = len(draft.meta.views)
    window_doc = features.doc[windows]
    window_class = all_window_class[windows]
    benign = window_class == 0
    weights = np.zeros((n_signals, layer_scores.shape[1]), dtype=np.float32)
    bias = np.zeros(n_signals, dtype=np.float32)
    for signal in range(n_signals):
        llr = layer_scores[:, signal * per_signal : (signal + 1) * per_signal].sum(axis=1)
        positive = best_window_per_doc(window_doc, llr, window_class == signal + 1)
        if positive.size == 0:
            continue
        x = np.concatenate([layer_scores[benign], layer_scores[positive]])
        y = np.concatenate([np.zeros(benign.sum()), np.ones(positive.size)])
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
        model.fit(x, y)
        weights[signal] = model.coef_[0]
        bias[signal] = model.intercept_[0]
    return {"combiner.weights": weights, "combiner.bias": bias}


def best_window_per_doc(window_doc: np.ndarray, score: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Indices (into the window arrays) of the highest-scoring masked window per document."""
    candidates = np.flatnonzero(mask)
    if candidates.size == 0:
        return candidates
    order = candidates[np.lexsort((-score[candidates], window_doc[candidates]))]
    first = np.ones(order.size, dtype=bool)
    first[1:] = window_doc[order[1:]] != window_doc[order[:-1]]
    return order[first]
