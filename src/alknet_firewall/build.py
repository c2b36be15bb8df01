"""Building and evaluating a codebook end to end: rows -> activations -> codebook/metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alknet_firewall.codebook import Codebook
from alknet_firewall.codebook_fit import ModelIdentity, fit_codebook
from alknet_firewall.config import Settings
from alknet_firewall.corpus import EVALUATION_ONLY, LabelledRows
from alknet_firewall.features import WindowFeatures, cached_extract, concat, extract
from alknet_firewall.metrics import detection_metrics
from alknet_firewall.model import DetectorModel, forward_token_budget
from alknet_firewall.poison import Pairing, poisoned_rows
from alknet_firewall.scoring import score_documents


def pairing_for(rows: LabelledRows) -> Pairing:
    """Payload groups (those with attacks) paired with the trainable benign groups."""
    labelled = [
        (group, label)
        for group, label, file in zip(rows.groups, rows.labels, rows.files, strict=True)
        if file not in EVALUATION_ONLY
    ]
    attack = sorted({group for group, label in labelled if label})
    benign = sorted({group for group, label in labelled if not label} - set(attack))
    return Pairing.rotating(attack, benign)


def with_poisoned(rows: LabelledRows, per_group: int, seed: int) -> LabelledRows:
    """The rows followed by `per_group` poisoned documents per attack group and their
    clean twins (poison.py), built from the trainable rows only and kept file by file so
    each synthetic genre is one block of the activation cache."""
    if per_group <= 0:
        return rows
    trainable = rows.subset([i for i, f in enumerate(rows.files) if f not in EVALUATION_ONLY])
    synthetic = poisoned_rows(trainable, pairing_for(rows), per_group, seed)
    order = sorted(range(len(synthetic)), key=lambda i: synthetic.files[i])
    return rows.extend(synthetic.subset(order))


def features_for(
    model: DetectorModel, rows: LabelledRows, settings: Settings, *, progress: bool
) -> WindowFeatures:
    """Window activations of the rows, cached per corpus file under the model cache dir, so
    that builds over different file selections reuse each file's activations."""
    cache = Path(settings.model.cache_dir)
    budget = forward_token_budget(settings.batching.token_budget, model)
    if not cache.is_dir():
        return extract(model, rows.texts, settings.windows, budget, progress=progress)
    parts = []
    for first, stop in file_blocks(rows.files):
        texts = rows.texts[first:stop]
        parts.append(
            cached_extract(model, texts, settings.windows, budget, cache, progress=progress)
        )
    return concat(parts)


def file_blocks(files: list[str]) -> list[tuple[int, int]]:
    """(first, stop) index ranges of consecutive rows from the same file."""
    blocks: list[tuple[int, int]] = []
    for index, name in enumerate(files):
        if blocks and files[blocks[-1][0]] == name:
            blocks[-1] = (blocks[-1][0], index + 1)
        else:
            blocks.append((index, index + 1))
    return blocks


def build_codebook(
    model: DetectorModel, rows: LabelledRows, settings: Settings, *, progress: bool = False
) -> Codebook:
    """Fit a codebook for `model` on labelled rows with the configured windows and ranks."""
    features = features_for(model, rows, settings, progress=progress)
    identity = ModelIdentity(model.model_id, model.weight_digest, list(model.layers))
    return fit_codebook(features, rows, identity, settings.windows, settings.codebook)


def evaluate_codebook(
    codebook: Codebook,
    model: DetectorModel,
    rows: LabelledRows,
    settings: Settings,
    *,
    progress: bool = False,
) -> dict[str, dict[str, float | int | None]]:
    """Metrics per file, per kind and pooled. Attack subsets are scored against all benign
    rows; benign subsets report their false-positive rate at the flag threshold."""
    codebook.check_model(
        model.model_id, model.weight_digest, list(model.layers), model.frame is not None
    )
    features = features_for(model, rows, settings, progress=progress)
    scores = score_documents(codebook, features).score()
    labels = np.array(rows.labels)
    flag = codebook.meta.thresholds.flag
    report = {"pooled": detection_metrics(labels, scores, flag)}
    for field, names in (("file", rows.files), ("kind", rows.kinds)):
        keys = np.array(names)
        for name in sorted(set(names)):
            subset = (keys == name) | (labels == 0)
            if not labels[keys == name].any():
                subset = keys == name
            report[f"{field}:{name}"] = detection_metrics(labels[subset], scores[subset], flag)
    return report
