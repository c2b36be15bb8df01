"""From texts to per-window views of the model: the one place the model is run.

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
from alknet_firewall.length_trend import WINDOW_TOKENS
from alknet_firewall.model import DetectorModel
from alknet_firewall.windows import iter_batches, tokenize_windows

# Part of the cache key: bump it when what a view means changes, or which views a pass
# gives (3: maxN added; caches without it would lack the views a codebook asks for).
VIEWS_VERSION = 3


@dataclass(frozen=True)
class WindowFeatures:
    """The model's views of every window of a list of texts.

    views: per view name (`DetectorModel.views`), float32 (windows, width); doc: the text
    each window belongs to; spans: (windows, 2) character start/end; tokens_per_doc: text
    tokens per text.
    """

    views: dict[str, np.ndarray]
    doc: np.ndarray
    spans: np.ndarray
    tokens_per_doc: np.ndarray

    @property
    def n_docs(self) -> int:
        return len(self.tokens_per_doc)

    def rows(self, keep: np.ndarray) -> WindowFeatures:
        """The chosen windows (a mask or indices), with their documents' numbering."""
        return WindowFeatures(
            {name: array[keep] for name, array in self.views.items()},
            self.doc[keep],
            self.spans[keep],
            self.tokens_per_doc,
        )


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
    views: dict[str, np.ndarray] = {}
    total_tokens = sum(len(window.token_ids) for window in found)
    suffix = model.frame.suffix if model.frame else None
    with tqdm(
        total=total_tokens, unit="tok", unit_scale=True, disable=not progress, leave=False
    ) as bar:
        for batch in iter_batches(found, model.tokenizer, token_budget, suffix):
            for name, array in model.views(batch, windows.pooling).items():
                if name not in views:
                    views[name] = np.zeros((len(found), array.shape[1]), dtype=np.float32)
                views[name][batch.windows] = array
            views.setdefault(WINDOW_TOKENS, np.zeros((len(found), 1), dtype=np.float32))
            views[WINDOW_TOKENS][batch.windows, 0] = batch.pool_mask.sum(axis=1)
            bar.update(batch.real_tokens)
    return WindowFeatures(
        views=views,
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
        return with_window_tokens(load(path), windows.size)
    features = extract(model, texts, windows, token_budget, progress=progress)
    store(features, path)
    return features


def cache_path(
    model: DetectorModel, texts: Sequence[str], windows: WindowSettings, cache_dir: Path
) -> Path:
    key = hashlib.sha256(
        json.dumps(
            [
                model.weight_digest,
                list(model.layers),
                windows.model_dump(),
                str(model_dtype(model)),
                dataclasses.asdict(model.frame) if model.frame else None,
                VIEWS_VERSION,
            ]
        ).encode()
    )
    for text in texts:
        key.update(hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest())
    return cache_dir / "features" / f"{key.hexdigest()[:32]}.safetensors"


def store(features: WindowFeatures, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".partial")
    arrays = {f"view.{name}": array for name, array in features.views.items()}
    arrays |= {
        "doc": features.doc,
        "spans": features.spans,
        "tokens_per_doc": features.tokens_per_doc,
    }
    save_file(arrays, str(staging))
    os.replace(staging, path)


def load(path: Path) -> WindowFeatures:
    arrays = load_file(str(path))
    return WindowFeatures(
        views={k.removeprefix("view."): v for k, v in arrays.items() if k.startswith("view.")},
        doc=arrays["doc"],
        spans=arrays["spans"],
        tokens_per_doc=arrays["tokens_per_doc"],
    )


def with_window_tokens(features: WindowFeatures, size: int) -> WindowFeatures:
    """Adds the window token counts to features cached before they were kept: every window
    of a text holds `size` tokens, or all of them when the text is shorter."""
    if WINDOW_TOKENS in features.views or not len(features.doc):
        return features
    counts = np.minimum(features.tokens_per_doc[features.doc], size).astype(np.float32)
    views = features.views | {WINDOW_TOKENS: counts[:, None]}
    return dataclasses.replace(features, views=views)


def take_docs(features: WindowFeatures, docs: np.ndarray) -> WindowFeatures:
    """The windows of the chosen documents, renumbered 0..len(docs)-1 in that order."""
    position = np.full(features.n_docs, -1)
    position[docs] = np.arange(docs.size)
    kept = features.rows(np.flatnonzero(position[features.doc] >= 0))
    return WindowFeatures(kept.views, position[kept.doc], kept.spans, features.tokens_per_doc[docs])


def concat(parts: Sequence[WindowFeatures]) -> WindowFeatures:
    """Features of several lists of texts, one after the other."""
    offsets = np.cumsum([0] + [part.n_docs for part in parts])
    # a part whose texts have no tokens has no windows, and so no views to concatenate
    with_windows = [part for part in parts if len(part.doc)]
    names = with_windows[0].views.keys() if with_windows else ()
    return WindowFeatures(
        views={name: np.concatenate([part.views[name] for part in with_windows]) for name in names},
        doc=np.concatenate(
            [part.doc + offset for part, offset in zip(parts, offsets, strict=False)]
        ),
        spans=np.concatenate([part.spans for part in parts]),
        tokens_per_doc=np.concatenate([part.tokens_per_doc for part in parts]),
    )


def model_dtype(model: DetectorModel) -> object:
    return getattr(model, "dtype", "float32")
