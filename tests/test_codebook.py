"""A codebook separates what it was fitted on, survives a save/load bit for bit, and refuses
tampered files and other models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from alknet_firewall.build import build_codebook
from alknet_firewall.codebook import Codebook, CodebookError
from alknet_firewall.codebook_fit import density_weights
from alknet_firewall.config import CodebookSettings
from alknet_firewall.density import fit_log_density, lookup
from alknet_firewall.features import extract
from alknet_firewall.firewall import Firewall
from alknet_firewall.length_trend import WINDOW_TOKENS
from alknet_firewall.metrics import detection_metrics, tpr_at_fpr
from alknet_firewall.model import TransformersDetector
from tests.tiny import tiny_rows, tiny_settings


def test_spline_density_integrates_to_one_and_peaks_at_the_mode() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 0.5, size=5000)
    table = fit_log_density(values, -2.0, 4.0, 128, 1.0)
    nodes = np.linspace(-2.0, 4.0, 128)
    assert np.trapezoid(np.exp(table), nodes) == pytest.approx(1.0, abs=0.02)
    assert abs(nodes[np.argmax(table)] - 1.0) < 0.15
    far = lookup(table[None], np.array([-2.0]), np.array([4.0]), np.array([[100.0]]))
    assert np.isfinite(far).all()  # beyond the grid: the edge value, never -inf


def test_a_weighted_value_counts_like_as_many_copies() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0.0, 1.0, size=4)
    weighted = fit_log_density(values, -3.0, 3.0, 64, 1.0, np.array([2.0, 1.0, 1.0, 0.0]))
    copies = fit_log_density(values[[0, 0, 1, 2]], -3.0, 3.0, 64, 1.0)
    np.testing.assert_allclose(weighted, copies, rtol=1e-5, atol=1e-5)


def test_each_document_weighs_the_same_in_the_densities_unless_asked_by_window() -> None:
    window_doc = np.array([0, 0, 0, 1, 2, 2])
    by_document = density_weights(window_doc, CodebookSettings())
    np.testing.assert_allclose(by_document, [1 / 3, 1 / 3, 1 / 3, 1, 0.5, 0.5])
    by_window = density_weights(window_doc, CodebookSettings(density_weights="window"))
    np.testing.assert_array_equal(by_window, np.ones(6))


def test_metrics_on_known_scores() -> None:
    labels = np.array([0] * 100 + [1] * 10)
    scores = np.concatenate([np.linspace(0, 0.5, 100), np.linspace(0.6, 1.0, 10)])
    metrics = detection_metrics(labels, scores, flag_threshold=0.55)
    assert metrics["auroc"] == 1.0 and metrics["fpr_at_flag"] == 0.0
    assert tpr_at_fpr(labels, scores, 0.01) == 1.0
    assert detection_metrics(labels[:100], scores[:100], 0.55)["auroc"] is None


def test_fitted_codebook_separates_held_out_rows(tiny_firewall: Firewall) -> None:
    rows = tiny_rows(seed=7, per_class=30)
    verdicts = tiny_firewall.screen_batch(rows.texts)
    scores = np.array([v.score for v in verdicts])
    metrics = detection_metrics(
        np.array(rows.labels), scores, tiny_firewall.codebook.meta.thresholds.flag
    )
    assert metrics["auroc"] is not None and metrics["auroc"] > 0.9


def test_metadata_records_model_data_and_thresholds(tiny_firewall: Firewall) -> None:
    meta = tiny_firewall.codebook.meta
    assert meta.weight_digest == tiny_firewall.model.weight_digest
    assert meta.data_digest.startswith("sha256:") and meta.tensors_digest.startswith("sha256:")
    assert 0.0 < meta.thresholds.flag <= meta.thresholds.block <= 1.0
    assert meta.signals == ["attack"]  # the default: one signal for every attack kind
    assert meta.metrics["auroc"] is not None


def test_per_kind_signals_are_fitted_when_asked(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = tiny_settings(tiny_model_dir, tmp_path / "cache")
    settings.codebook.signals = "per_kind"
    model = TransformersDetector.from_settings(settings.model)
    codebook = build_codebook(model, tiny_rows(), settings)
    assert codebook.signals == ["direct_injection", "indirect_injection", "jailbreak"]
    rows = tiny_rows(seed=3, per_class=10)
    features = extract(model, rows.texts, settings.windows, 2048)
    assert codebook.window_probabilities(features.views).shape == (len(features.doc), 3)
    assert codebook.meta.metrics["auroc"] > 0.9


def test_a_length_adjusted_codebook_scores_the_same_after_a_save(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = tiny_settings(tiny_model_dir, tmp_path / "cache")
    settings.codebook.length_adjust = True
    model = TransformersDetector.from_settings(settings.model)
    codebook = build_codebook(model, tiny_rows(), settings)
    assert codebook.meta.length_adjusted
    assert all(f"{view}.length_trend" in codebook.tensors for view in codebook.meta.views)
    codebook.save(tmp_path / "cb")
    features = extract(model, tiny_rows(seed=3, per_class=10).texts, settings.windows, 2048)
    np.testing.assert_array_equal(
        Codebook.load(tmp_path / "cb").window_probabilities(features.views),
        codebook.window_probabilities(features.views),
    )
    assert codebook.meta.metrics["auroc"] > 0.9


def test_saved_and_loaded_codebook_scores_identically(
    tiny_firewall: Firewall, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    codebook = tiny_firewall.codebook
    views = {
        name: rng.normal(size=(20, codebook.tensors[f"{name}.mean"].shape[0])).astype(np.float32)
        for name in codebook.meta.views
    }
    views[WINDOW_TOKENS] = rng.integers(1, 129, size=(20, 1)).astype(np.float32)
    codebook.save(tmp_path / "copy")
    loaded = Codebook.load(tmp_path / "copy")
    np.testing.assert_array_equal(
        codebook.window_probabilities(views), loaded.window_probabilities(views)
    )
    assert loaded.meta.version == tiny_firewall.codebook.meta.version


def test_format_1_codebooks_still_load_and_score_the_same(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A codebook saved before views existed (blocks named by layer position, no framing or
    novelty fields) is read as the unframed mean-pooled codebook it is."""
    settings = tiny_settings(tiny_model_dir, tmp_path / "cache")
    views = [f"mean{layer}" for layer in settings.model.layers]
    settings.windows.framed = False
    settings.codebook.views, settings.codebook.novelty = views, True
    model = TransformersDetector.from_settings(settings.model, framed=False)
    codebook = build_codebook(model, tiny_rows(per_class=40), settings)
    old_tensors = {
        name.replace(f"{view}.", f"layer{index}.", 1): array
        for name, array in codebook.tensors.items()
        for index, view in enumerate(views)
        if name.startswith(f"{view}.")
    } | {name: array for name, array in codebook.tensors.items() if name.startswith("combiner")}
    folder = tmp_path / "format1"
    Codebook(codebook.meta.model_copy(), old_tensors).save(folder)
    raw = json.loads((folder / "codebook.json").read_text())
    for field in ("framed", "views", "novelty"):
        del raw[field]
    raw["format_version"] = 1
    (folder / "codebook.json").write_text(json.dumps(raw))

    loaded = Codebook.load(folder)
    assert (loaded.meta.framed, loaded.meta.views, loaded.meta.novelty) == (False, views, True)
    features = extract(model, tiny_rows(seed=5, per_class=5).texts, settings.windows, 2048)
    np.testing.assert_allclose(
        loaded.window_probabilities(features.views),
        codebook.window_probabilities(features.views),
        rtol=1e-5,
        atol=1e-7,
    )


def test_tampered_tensors_are_refused(tiny_codebook_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(tiny_codebook_dir, copy)
    data = bytearray((copy / "codebook.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "codebook.safetensors").write_bytes(bytes(data))
    with pytest.raises(CodebookError, match="does not match the digest"):
        Codebook.load(copy)


def test_newer_format_is_refused(tiny_codebook_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "future"
    shutil.copytree(tiny_codebook_dir, copy)
    meta = json.loads((copy / "codebook.json").read_text())
    meta["format_version"] = 99
    (copy / "codebook.json").write_text(json.dumps(meta))
    with pytest.raises(CodebookError, match="format 99"):
        Codebook.load(copy)


def test_mismatched_model_is_refused(tiny_firewall: Firewall) -> None:
    codebook = tiny_firewall.codebook
    meta = codebook.meta
    with pytest.raises(CodebookError, match="was built for"):
        codebook.check_model("other", "sha256:" + "0" * 64, meta.layers, meta.framed)
    with pytest.raises(CodebookError, match="layers"):
        codebook.check_model(meta.model_id, meta.weight_digest, [1, 2], meta.framed)
    with pytest.raises(CodebookError, match="task frame"):
        codebook.check_model(meta.model_id, meta.weight_digest, meta.layers, not meta.framed)
