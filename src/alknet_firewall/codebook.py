"""The codebook: what turns pooled activations into calibrated per-signal scores.

Per layer: a centred, standardised SVD basis; per component, spline-fitted log-densities
for benign text and for each attack signal; a novelty score from the residual outside the
basis. Per signal, a logistic combiner weighs the layers' log-likelihood ratios and
novelties into a probability. Thresholds are set on held-out benign text at target
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

FORMAT_VERSION = 1
TENSORS_FILE = "codebook.safetensors"
META_FILE = "codebook.json"
LLR_CLIP = 3.0


class CodebookError(ValueError):
    """A codebook that cannot be used: missing, corrupt, tampered or for another model."""


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

    def layer_features(self, pooled: np.ndarray) -> np.ndarray:
        """Per window: each signal's log-likelihood ratio at each layer, then each layer's
        novelty. pooled: (windows, layers, hidden) -> (windows, signals*layers + layers)."""
        llrs: list[np.ndarray] = []
        novelties: list[np.ndarray] = []
        for index in range(len(self.meta.layers)):
            llr, novelty = self._layer_scores(index, pooled[:, index, :])
            llrs.append(llr)
            novelties.append(novelty[:, None])
        # order: signal-major, then layer; matches the combiner's weight columns
        by_signal = np.stack(llrs, axis=2).reshape(pooled.shape[0], -1)
        return np.concatenate([by_signal, *novelties], axis=1)

    def _layer_scores(self, index: int, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self.tensors
        prefix = f"layer{index}."
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

    def window_probabilities(self, pooled: np.ndarray) -> np.ndarray:
        """(windows, signals) probability that each window carries each signal."""
        logits = self.layer_features(pooled) @ self.tensors["combiner.weights"].T
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
            meta = CodebookMeta.model_validate_json(meta_path.read_text("utf-8"))
        except ValueError as exc:
            raise CodebookError(f"{meta_path} is not valid codebook metadata: {exc}") from None
        if meta.format_version != FORMAT_VERSION:
            raise CodebookError(
                f"{folder} has codebook format {meta.format_version}; this version reads "
                f"{FORMAT_VERSION}: rebuild it with `alknet-firewall codebook build`"
            )
        actual = _file_digest(tensors_path)
        if actual != meta.tensors_digest:
            raise CodebookError(
                f"{tensors_path} does not match the digest in {META_FILE} "
                f"({actual} != {meta.tensors_digest}): the file was altered or mixed up"
            )
        return cls(meta, load_file(str(tensors_path)))

    def check_model(self, model_id: str, weight_digest: str, layers: list[int]) -> None:
        """Refuse to score activations of a model other than the one it was built on."""
        if weight_digest != self.meta.weight_digest or layers != self.meta.layers:
            raise CodebookError(
                f"codebook {self.meta.version} was built for {self.meta.model_id} "
                f"(weights {self.meta.weight_digest[:23]}..., layers {self.meta.layers}) but the "
                f"loaded model is {model_id} (weights {weight_digest[:23]}..., layers {layers}): "
                "use the model it was built for, or build a codebook for this model"
            )


def _file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def metrics_json(metrics: dict[str, Any]) -> str:
    return json.dumps(metrics, indent=2, sort_keys=True)
