"""From texts to pooled window activations: the one place the model is run.

Shared by the firewall (screening) and the codebook builder (fitting, evaluation), so both
see exactly the same windows, pooling and dtype.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from alknet_firewall.config import WindowSettings
from alknet_firewall.model import DetectorModel
from alknet_firewall.windows import iter_batches, tokenize_windows


@dataclass(frozen=True)
class WindowFeatures:
    """Pooled activations of every window of a list of texts.

    pooled: (windows, layers, hidden) float32; doc: the text each window belongs to;
    spans: (windows, 2) character start/end; tokens_per_doc: text tokens per text.
    """

    pooled: np.ndarray
    doc: np.ndarray
    spans: np.ndarray
    tokens_per_doc: np.ndarray

    @property
    def n_docs(self) -> int:
        return len(self.tokens_per_doc)


def extract(
    model: DetectorModel,
    texts: Sequence[str],
    windows: WindowSettings,
    token_budget: int,
    *,
    progress: bool = False,
) -> WindowFeatures:
    """Run the model over all windows of `texts`, batched by token budget."""
    tokenized = tokenize_windows(model.tokenizer, texts, windows.size, windows.stride)
    found = tokenized.windows
    pooled = np.zeros((len(found), len(model.layers), model.hidden_size), dtype=np.float32)
    total_tokens = sum(len(window.token_ids) for window in found)
    with tqdm(
        total=total_tokens, unit="tok", unit_scale=True, disable=not progress, leave=False
    ) as bar:
        for batch in iter_batches(found, model.tokenizer, token_budget):
            pooled[batch.windows] = model.pooled(batch, windows.pooling)
            bar.update(batch.real_tokens)
    return WindowFeatures(
        pooled=pooled,
        doc=np.array([window.doc for window in found], dtype=np.int64),
        spans=np.array([(w.char_start, w.char_end) for w in found], dtype=np.int64).reshape(-1, 2),
        tokens_per_doc=np.array(tokenized.tokens_per_doc, dtype=np.int64),
    )


def cached_extract(
    model: DetectorModel,
    texts: Sequence[str],
    windows: WindowSettings,
    token_budget: int,
    cache_dir: Path,
    *,
    progress: bool = False,
) -> WindowFeatures:
    """`extract`, remembered on disk: codebook builds and evaluations over the same texts
    with the same model and windows run the model once."""
    path = cache_path(model, texts, windows, cache_dir)
    if path.is_file():
        return WindowFeatures(**load_file(str(path)))
    features = extract(model, texts, windows, token_budget, progress=progress)
    store(features, path)
    return features


def cache_path(
    model: DetectorModel, texts: Sequence[str], windows: WindowSettings, cache_dir: Path
) -> Path:
    key = hashlib.sha256(
        json.dumps(
            [model.weight_digest, list(model.layers), windows.model_dump(), str(model_dtype(model))]
        ).encode()
    )
    for text in texts:
        key.update(hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest())
    return cache_dir / "features" / f"{key.hexdigest()[:32]}.safetensors"


def store(features: WindowFeatures, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".partial")
    save_file(dataclasses.asdict(features), str(staging))
    os.replace(staging, path)


def select_docs(features: WindowFeatures, first: int, stop: int) -> WindowFeatures:
    """The features of documents first..stop-1, renumbered from 0."""
    keep = (features.doc >= first) & (features.doc < stop)
    return WindowFeatures(
        pooled=features.pooled[keep],
        doc=features.doc[keep] - first,
        spans=features.spans[keep],
        tokens_per_doc=features.tokens_per_doc[first:stop],
    )


def concat(parts: Sequence[WindowFeatures]) -> WindowFeatures:
    """Features of several lists of texts, one after the other."""
    offsets = np.cumsum([0] + [part.n_docs for part in parts])
    return WindowFeatures(
        pooled=np.concatenate([part.pooled for part in parts]),
        doc=np.concatenate(
            [part.doc + offset for part, offset in zip(parts, offsets, strict=False)]
        ),
        spans=np.concatenate([part.spans for part in parts]),
        tokens_per_doc=np.concatenate([part.tokens_per_doc for part in parts]),
    )


def model_dtype(model: DetectorModel) -> object:
    return getattr(model, "dtype", "float32")
