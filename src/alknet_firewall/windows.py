"""Cutting texts into overlapping token windows and packing them into batches.

A long document becomes several windows, each with the character span it covers, so that
an instruction hidden deep in a page is scored on its own window instead of being
averaged away. Windows are sorted by length and packed under a token budget (padded
length x count), which keeps padding small and memory bounded whatever the length mix.

A window's padded width depends on its own length only (rounded up to a multiple of
`WIDTH_STEP`), never on its batch-mates: the attention and matmul kernels pick their
blocking by sequence length, and in bf16 a window padded to another width came out with
states up to 0.5 apart. With the linear layers' fixed row blocks on CPU (fixed_rows.py,
for kernels that also choose by the number of rows), the same text gets the same
activations, and the same score, in any batch, in process or through the queue.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# Padded widths are multiples of this. Every width inside one step gave bit-identical states
# for the same window on this CPU in bf16 (24 to 31 tokens alike, 32 on differed); a step
# of 16 costs at most 15 padding tokens per window.
WIDTH_STEP = 16


class Tokenizer(Protocol):
    bos_token_id: int | None
    pad_token_id: int | None
    eos_token_id: int | None

    def __call__(self, text: list[str], **kwargs: object) -> object: ...


@dataclass(frozen=True)
class Window:
    """A slice of one document's tokens and the characters they came from."""

    doc: int
    token_ids: tuple[int, ...]
    char_start: int
    char_end: int


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded model inputs for a list of windows.

    `pool_mask` marks the tokens that count for pooling: the window's text tokens only,
    not the BOS token an unframed window starts with (a constant attention sink), not a
    frame's suffix, never padding. `last` is each row's last real position (the end of the
    suffix when framed), where the framed views read the model's state.
    """

    windows: list[int]  # indices into the window list this batch was cut from
    input_ids: np.ndarray
    attention_mask: np.ndarray
    pool_mask: np.ndarray

    @property
    def real_tokens(self) -> int:
        return int(self.pool_mask.sum())

    @property
    def last(self) -> np.ndarray:
        return np.asarray(self.attention_mask.sum(axis=1) - 1)


@dataclass(frozen=True)
class Tokenized:
    windows: list[Window]
    tokens_per_doc: list[int]


def window_starts(n_tokens: int, size: int, stride: int) -> list[int]:
    """Start offsets so that windows of `size` cover all tokens, the last one flush right."""
    if n_tokens <= size:
        return [0]
    starts = list(range(0, n_tokens - size, stride))
    starts.append(n_tokens - size)
    return starts


def tokenize_windows(
    tokenizer: Tokenizer, texts: Sequence[str], size: int, stride: int
) -> Tokenized:
    """Tokenise each text once and cut it into windows of at most `size` text tokens."""
    encoded = tokenizer(
        list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    all_ids: list[list[int]] = encoded["input_ids"]  # type: ignore[index]
    all_offsets: list[list[tuple[int, int]]] = encoded["offset_mapping"]  # type: ignore[index]
    windows: list[Window] = []
    for doc, (ids, offsets) in enumerate(zip(all_ids, all_offsets, strict=True)):
        for start in window_starts(len(ids), size, stride):
            end = min(start + size, len(ids))
            if end == start:
                continue  # a text with no tokens has no window; the caller reports it
            windows.append(
                Window(doc, tuple(ids[start:end]), offsets[start][0], offsets[end - 1][1])
            )
    return Tokenized(windows, [len(ids) for ids in all_ids])


def padded_width(n_tokens: int) -> int:
    """The width a row of `n_tokens` (text + BOS or suffix) is padded to, whatever its
    batch-mates."""
    return -(-n_tokens // WIDTH_STEP) * WIDTH_STEP


def plan_batches(windows: Sequence[Window], token_budget: int, extra: int = 1) -> list[list[int]]:
    """Group window indices into batches of one padded width, each within `token_budget`
    (width x count).

    Widest first, in input order within a width, so the plan does not depend on how the
    windows are numbered beyond that. A single window wider than the budget still gets a
    batch of its own.
    """
    widths = [padded_width(len(window.token_ids) + extra) for window in windows]  # + BOS/suffix
    order = sorted(range(len(windows)), key=lambda i: -widths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and (
            widths[index] != widths[current[0]] or widths[index] * (len(current) + 1) > token_budget
        ):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def make_batch(
    windows: Sequence[Window],
    indices: list[int],
    tokenizer: Tokenizer,
    suffix: Sequence[int] | None = None,
) -> TokenBatch:
    """Right-pad the chosen windows to their common padded width. Right padding keeps
    every real token's position and causal context identical to an unpadded run.

    Without a `suffix` each window starts with BOS; with one (a frame's, whose prefix the
    model holds in its cache) each window is followed by it instead."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    bos = tokenizer.bos_token_id
    lead = [bos] if suffix is None and bos is not None else []
    tail = list(suffix or ())
    width = padded_width(max(len(windows[i].token_ids) for i in indices) + len(lead) + len(tail))
    input_ids = np.full((len(indices), width), pad if pad is not None else 0, dtype=np.int64)
    attention = np.zeros((len(indices), width), dtype=np.int64)
    pool_mask = np.zeros((len(indices), width), dtype=bool)
    for row, index in enumerate(indices):
        text = list(windows[index].token_ids)
        ids = lead + text + tail
        input_ids[row, : len(ids)] = ids
        attention[row, : len(ids)] = 1
        pool_mask[row, len(lead) : len(lead) + len(text)] = True
    return TokenBatch(indices, input_ids, attention, pool_mask)


def iter_batches(
    windows: Sequence[Window],
    tokenizer: Tokenizer,
    token_budget: int,
    suffix: Sequence[int] | None = None,
) -> Iterator[TokenBatch]:
    extra = 1 if suffix is None else len(suffix)
    for indices in plan_batches(windows, token_budget, extra):
        yield make_batch(windows, indices, tokenizer, suffix)
