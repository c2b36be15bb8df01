"""The codebook: what turns the model's views of a window into calibrated per-signal scores.

Per view (a layer's pooled residual stream, the framed prompt's final state at a layer, the
attention split between task and document): a centred, standardised SVD basis; per
component, spline-fitted log-densities for benign text and for each attack signal; a
novelty score from the residual outside the basis. Per signal, a logistic combiner weighs
the views' log-likelihood ratios (and, where the codebook keeps them, novelties) into a
probability. Thresholds are set on held-out benign text at target
false-positive rates. Stored as safetensors (arrays) + JSON (metadata), never pickle.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from safetensors.numpy import load_file, save_file

from alknet_firewall.density import lookup
from alknet_firewall.errors import CodebookError
from alknet_firewall.length_trend import WINDOW_TOKENS, remove_length_trend

FORMAT_VERSION = 2
TENSORS_FILE = "codebook.safetensors"
META_FILE = "codebook.json"
LLR_CLIP = 3.0


class Thresholds(BaseModel):
    flag: float = Field(ge=0.0, le=1.0)
    block: float = Field(ge=0.0, le=1.0)


class CodebookMeta(BaseModel):
    """Everything needed to know what a codebook was built from and how it did."""

    format_version: int = FORMAT_VERSION
    version: str = ""
    model_id: str
    weight_digest: str
    layers: list[int]
    # whether windows are read inside the frame of framing.py (the views below need it)
    framed: bool
    views: list[str]
    novelty: bool
    # whether each view has its benign trend over log(window tokens) taken out before it is
    # scored (tensors `<view>.length_trend`); False in older codebooks
    length_adjusted: bool = False
    pooling: str
    window_size: int
    window_stride: int
    signals: list[str]
    rank: int
    thresholds: Thresholds
    flag_fpr: float
    block_fpr: float
    data_digest: str
    tensors_digest: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


class Codebook:
    """Scores pooled window activations. Build with `fit_codebook`, or `Codebook.load`."""

    def __init__(self, meta: CodebookMeta, tensors: dict[str, np.ndarray]) -> None:
        self.meta = meta
        self.tensors = tensors

    @property
    def signals(self) -> list[str]:
        return self.meta.signals

    def view_scores(self, views: dict[str, np.ndarray]) -> np.ndarray:
        """Per window: each signal's log-likelihood ratio in each view, then (if the codebook
        uses novelty) each view's novelty. -> (windows, signals * views [+ views])."""
        llrs: list[np.ndarray] = []
        novelties: list[np.ndarray] = []
        for name in self.meta.views:
            vectors = views[name]
            if self.meta.length_adjusted:
                vectors = remove_length_trend(
                    vectors, self.tensors[f"{name}.length_trend"], views[WINDOW_TOKENS]
                )
            llr, novelty = self._view_scores(name, vectors)
            llrs.append(llr)
            novelties.append(novelty[:, None])
        # order: signal-major, then view; matches the combiner's weight columns
        by_signal = np.stack(llrs, axis=2).reshape(llrs[0].shape[0], -1)
        return np.concatenate([by_signal, *novelties], axis=1) if self.meta.novelty else by_signal

    def _view_scores(self, name: str, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self.tensors
        prefix = f"{name}."
        standard = (vectors - t[prefix + "mean"]) / t[prefix + "scale"]
        basis = t[prefix + "basis"]
        coords = standard @ basis
        tables = t[prefix + "log_density"]  # (classes, components, points)
        low, high = t[prefix + "low"], t[prefix + "high"]
        benign = lookup(tables[0], low, high, coords)
        # Clipped per component: a density tail seen by few training windows must not let
        # one component outvote all the others.
        llr = np.stack(
            [
                np.clip(lookup(tables[c], low, high, coords) - benign, -LLR_CLIP, LLR_CLIP).sum(
                    axis=1
                )
                for c in range(1, tables.shape[0])
            ],
            axis=1,
        )  # (windows, signals)
        residual = np.linalg.norm(standard - coords @ basis.T, axis=1)
        centre, spread = t[prefix + "residual_stats"]
        novelty = (np.log(residual + 1e-6) - centre) / spread
        return llr, novelty

    def window_probabilities(self, views: dict[str, np.ndarray]) -> np.ndarray:
        """(windows, signals) probability that each window carries each signal."""
        logits = self.view_scores(views) @ self.tensors["combiner.weights"].T
        logits += self.tensors["combiner.bias"]
        probabilities: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))
        return probabilities

    def save(self, folder: Path) -> None:
        """Write codebook.safetensors and codebook.json (with the tensors' digest)."""
        folder.mkdir(parents=True, exist_ok=True)
        # safetensors writes the raw buffer: a transposed view would be saved scrambled.
        contiguous = {name: np.ascontiguousarray(array) for name, array in self.tensors.items()}
        save_file(contiguous, str(folder / TENSORS_FILE))
        (folder / TENSORS_FILE).chmod(0o644)  # safetensors writes 0600: unreadable to others
        self.meta.tensors_digest = _file_digest(folder / TENSORS_FILE)
        if not self.meta.version:
            self.meta.version = "cb-" + self.meta.tensors_digest.split(":")[1][:12]
        (folder / META_FILE).write_text(self.meta.model_dump_json(indent=2) + "\n", "utf-8")

    @classmethod
    def load(cls, folder: Path) -> Codebook:
        """Read a saved codebook, refusing one whose tensors do not match their digest."""
        meta_path, tensors_path = folder / META_FILE, folder / TENSORS_FILE
        if not meta_path.is_file() or not tensors_path.is_file():
            raise CodebookError(f"no codebook in {folder}: expected {META_FILE} and {TENSORS_FILE}")
        try:
            raw = json.loads(meta_path.read_text("utf-8"))
            version = raw.get("format_version") if isinstance(raw, dict) else None
            if version == 1:
                raw = _format1_meta(raw)
            meta = CodebookMeta.model_validate(raw)
        except ValueError as exc:
            raise CodebookError(f"{meta_path} is not valid codebook metadata: {exc}") from None
        if meta.format_version not in (1, FORMAT_VERSION):
            raise CodebookError(
                f"{folder} has codebook format {meta.format_version}; this version reads "
                f"1 and {FORMAT_VERSION}: rebuild it with `alknet-firewall codebook build`"
            )
        actual = _file_digest(tensors_path)
        if actual != meta.tensors_digest:
            raise CodebookError(
                f"{tensors_path} does not match the digest in {META_FILE} "
                f"({actual} != {meta.tensors_digest}): the file was altered or mixed up"
            )
        tensors = load_file(str(tensors_path))
        if meta.format_version == 1:
            tensors = _format1_tensors(tensors, meta.views)
            meta.format_version = FORMAT_VERSION  # what it is once its tensors are renamed
        return cls(meta, tensors)

    def check_model(
        self, model_id: str, weight_digest: str, layers: list[int], framed: bool
    ) -> None:
        """Refuse to score views of a model other than the one it was built on, or read
        another way (other layers, framed or not)."""
        if framed != self.meta.framed:
            raise CodebookError(
                f"codebook {self.meta.version} reads windows "
                f"{'inside' if self.meta.framed else 'outside'} the task frame; the loaded "
                "model was set up the other way"
            )
        if weight_digest != self.meta.weight_digest or layers != self.meta.layers:
            raise CodebookError(
                f"codebook {self.meta.version} was built for {self.meta.model_id} "
                f"(weights {self.meta.weight_digest[:23]}..., layers {self.meta.layers}) but the "
                f"loaded model is {model_id} (weights {weight_digest[:23]}..., layers {layers}): "
                "use the model it was built for, or build a codebook for this model"
            )


def _format1_meta(raw: dict[str, Any]) -> dict[str, Any]:
    """Format 1 (up to cb-49fcc4c6dcf7): unframed windows, one mean-pooled view per layer,
    novelty terms always in the combiner."""
    return raw | {
        "framed": False,
        "views": [f"{raw.get('pooling', 'mean')}{layer}" for layer in raw.get("layers", [])],
        "novelty": True,
    }


def _format1_tensors(tensors: dict[str, np.ndarray], views: list[str]) -> dict[str, np.ndarray]:
    """Format 1 named its blocks by position (layer0.*); format 2 by view (mean4.*)."""
    pooled = {f"layer{index}.": f"{view}." for index, view in enumerate(views)}
    renamed = {}
    for name, array in tensors.items():
        prefix = name[: name.index(".") + 1]
        renamed[pooled.get(prefix, prefix) + name[len(prefix) :]] = array
    return renamed


def _file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def metrics_json(metrics: dict[str, Any]) -> str:
    return json.dumps(metrics, indent=2, sort_keys=True)
