"""From texts to per-window views of the model: the one place the model is run.

Shared by the firewall (screening) and the codebook builder (fitting, evaluation), so both
see exactly the same windows, pooling and dtype.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from alknet_firewall.config import WindowSettings
from alknet_firewall.length_trend import WINDOW_TOKENS
from alknet_firewall.model import DetectorModel, Pooling
from alknet_firewall.windows import TokenBatch, Tokenized, iter_batches, tokenize_windows

log = logging.getLogger(__name__)

# Part of the cache key: bump it when what a view means changes, or which views a pass
# gives (3: maxN added; caches without it would lack the views a codebook asks for).
VIEWS_VERSION = 3
# The cached texts' SHA-256 digests, one row of 32 bytes per document.
TEXT_DIGESTS = "text_digest"


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


@dataclass(frozen=True)
class PreparedWindows:
    """Texts cut into windows and packed into model inputs: all `extract` does before the
    model, so that one thread can prepare the next texts while the model reads these."""

    tokenized: Tokenized
    batches: list[TokenBatch]

    @property
    def real_tokens(self) -> int:
        return sum(batch.real_tokens for batch in self.batches)


def prepare_windows(
    model: DetectorModel, texts: Sequence[str], windows: WindowSettings, token_budget: int
) -> PreparedWindows:
    """Tokenise `texts` into windows and pack them into token-budget batches."""
    if not texts:  # the tokenizer refuses an empty batch
        return PreparedWindows(Tokenized([], []), [])
    tokenized = tokenize_windows(model.tokenizer, texts, windows.size, windows.stride)
    suffix = model.frame.suffix if model.frame else None
    batches = list(iter_batches(tokenized.windows, model.tokenizer, token_budget, suffix))
    return PreparedWindows(tokenized, batches)


def extract_prepared(
    model: DetectorModel, prepared: PreparedWindows, pooling: Pooling, *, progress: bool = False
) -> WindowFeatures:
    """Run the model over prepared windows."""
    found = prepared.tokenized.windows
    views: dict[str, np.ndarray] = {}
    with tqdm(
        total=prepared.real_tokens, unit="tok", unit_scale=True, disable=not progress, leave=False
    ) as bar:
        for batch in prepared.batches:
            for name, array in model.views(batch, pooling).items():
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
        tokens_per_doc=np.array(prepared.tokenized.tokens_per_doc, dtype=np.int64),
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
    prepared = prepare_windows(model, texts, windows, token_budget)
    return extract_prepared(model, prepared, windows.pooling, progress=progress)


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
    with the same model and windows run the model once. Texts another cached list held
    (a build's rows inside an evaluation's sample, a larger sample) are taken from it:
    only the texts no cache file holds go through the model."""
    path = cache_path(model, texts, windows, cache_dir)
    if path.is_file():
        cached = load(path)
        if not windowless(cached.doc, cached.tokens_per_doc).size:
            return with_window_tokens(cached, windows.size)
        log.warning("features: %s lacks some texts' windows; running those again", path.name)
    digests = [text_digest(text) for text in texts]
    found = cached_texts(path.parent, config_key(model, windows), set(digests))
    missing = [i for i, digest in enumerate(digests) if digest not in found]
    fresh = extract(model, [texts[i] for i in missing], windows, token_budget, progress=progress)
    if missing and len(missing) < len(texts):
        log.info(
            "features: %d of %d texts from the cache, %d through the model",
            len(texts) - len(missing),
            len(texts),
            len(missing),
        )
    if len(missing) == len(texts):
        features = fresh
    else:
        features = assemble(digests, found, fresh, missing, windows.size)
    store(features, digests, path)
    return features


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()


def config_key(model: DetectorModel, windows: WindowSettings) -> str:
    """What every cached view depends on besides the text: weights, layers, windows, dtype,
    framing and what the views mean."""
    key = json.dumps(
        [
            model.weight_digest,
            list(model.layers),
            windows.model_dump(),
            str(model_dtype(model)),
            dataclasses.asdict(model.frame) if model.frame else None,
            VIEWS_VERSION,
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def cache_path(
    model: DetectorModel, texts: Sequence[str], windows: WindowSettings, cache_dir: Path
) -> Path:
    """features/<config key>-<texts key>.safetensors: files of one configuration share a
    prefix, so a new list of texts can look for its texts in them."""
    key = hashlib.sha256()
    for text in texts:
        key.update(text_digest(text))
    name = f"{config_key(model, windows)}-{key.hexdigest()[:16]}.safetensors"
    return cache_dir / "features" / name


def cached_texts(folder: Path, config: str, wanted: set[bytes]) -> dict[bytes, tuple[Path, int]]:
    """Where cached files of this configuration hold the wanted texts: digest -> (file,
    document index). Reads only each file's digest table."""
    found: dict[bytes, tuple[Path, int]] = {}
    for path in sorted(folder.glob(f"{config}-*.safetensors")):
        with safe_open(str(path), framework="numpy") as handle:
            if TEXT_DIGESTS not in handle.keys():  # noqa: SIM118 (safe_open has no __contains__)
                continue
            table = handle.get_tensor(TEXT_DIGESTS)
            broken = set(windowless(handle.get_tensor("doc"), handle.get_tensor("tokens_per_doc")))
        for doc, row in enumerate(table):
            digest = row.tobytes()
            if digest in wanted and digest not in found and doc not in broken:
                found[digest] = (path, doc)
    return found


def assemble(
    digests: Sequence[bytes],
    found: dict[bytes, tuple[Path, int]],
    fresh: WindowFeatures,
    missing: Sequence[int],
    size: int,
) -> WindowFeatures:
    """The requested texts' features in their order, from cached files and `fresh` (the
    features of the texts at positions `missing`)."""
    parts: list[WindowFeatures] = []
    order: list[int] = []  # position of each part's documents in the request
    by_file: dict[Path, list[int]] = {}
    for position, digest in enumerate(digests):
        if digest in found:
            by_file.setdefault(found[digest][0], []).append(position)
    for path, positions in by_file.items():
        cached = with_window_tokens(load(path), size)
        docs = np.array([found[digests[p]][1] for p in positions], dtype=np.int64)
        parts.append(take_docs(cached, docs))
        order += positions
    parts.append(fresh)
    order += list(missing)
    joined = concat(parts)
    position_of = np.empty(len(order), dtype=np.int64)
    position_of[order] = np.arange(len(order))  # request position -> joined document
    # take_docs groups windows by the requested order: document order, as `extract` gives
    return take_docs(joined, position_of)


def store(features: WindowFeatures, digests: Sequence[bytes], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".partial")
    arrays = {f"view.{name}": array for name, array in features.views.items()}
    arrays |= {
        "doc": features.doc,
        "spans": features.spans,
        "tokens_per_doc": features.tokens_per_doc,
        TEXT_DIGESTS: np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 32),
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
    """The windows of the chosen documents, renumbered 0..len(docs)-1 in that order and
    grouped by it; a document chosen twice (the same text twice in one request) is copied."""
    docs = np.asarray(docs, dtype=np.int64)
    by_doc = np.argsort(features.doc, kind="stable")  # windows keep their order in a doc
    first = np.searchsorted(features.doc[by_doc], docs, side="left")
    counts = np.searchsorted(features.doc[by_doc], docs, side="right") - first
    starts = np.cumsum(counts) - counts
    within = np.arange(int(counts.sum())) - np.repeat(starts, counts)
    kept = features.rows(by_doc[np.repeat(first, counts) + within])
    new_doc = np.repeat(np.arange(docs.size, dtype=np.int64), counts)
    return WindowFeatures(kept.views, new_doc, kept.spans, features.tokens_per_doc[docs])


def windowless(doc: np.ndarray, tokens_per_doc: np.ndarray) -> np.ndarray:
    """Documents with tokens but no window: `extract` never gives one, so a cache file
    holding one was written wrongly (before take_docs copied repeated documents, a text
    repeated in one request lost its windows) and those documents are run again."""
    return np.flatnonzero(
        (np.bincount(doc, minlength=len(tokens_per_doc)) == 0) & (tokens_per_doc > 0)
    )


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
