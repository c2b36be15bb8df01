"""Where an injected payload sits: a poisoned document diffed against its clean twin.

The paired corpus files (bipia, synth_indirect) hold each poisoned document beside the
clean text it was made from. The characters the poisoned one adds are the payload; knowing
them turns "this document is an attack" into "these windows are the attack, the rest is
ordinary text of the same genre", which is what teaches a codebook the shift rather than
the topic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

Span = tuple[int, int]

# Payloads are inserted at the start, middle or end, so every twin shares either the
# poisoned text's first or its last characters.
ANCHOR_CHARS = 30
# An insertion, not an edit: at most this many of the clean twin's characters may differ.
MAX_CLEAN_LOSS = 2


def locate_payloads(poisoned: Sequence[str], clean: Sequence[str]) -> list[Span | None]:
    """Per poisoned text, the character span it adds to its best-matching clean twin, or
    None where no clean text matches it up to one inserted span."""
    by_head: dict[str, list[str]] = defaultdict(list)
    by_tail: dict[str, list[str]] = defaultdict(list)
    for text in set(clean):
        by_head[text[:ANCHOR_CHARS]].append(text)
        by_tail[text[-ANCHOR_CHARS:]].append(text)
    spans: list[Span | None] = []
    for text in poisoned:
        candidates = by_head.get(text[:ANCHOR_CHARS], []) + by_tail.get(text[-ANCHOR_CHARS:], [])
        spans.append(best_insertion(text, candidates))
    return spans


def best_insertion(text: str, candidates: Sequence[str]) -> Span | None:
    best: tuple[int, Span] | None = None
    for twin in candidates:
        if len(twin) >= len(text):
            continue
        head = shared_prefix(text, twin)
        # the shared tail may not overlap the shared head in either text
        tail = min(shared_prefix(text[::-1], twin[::-1]), len(twin) - head)
        kept = head + tail
        if kept >= len(twin) - MAX_CLEAN_LOSS and (best is None or kept > best[0]):
            best = (kept, (head, len(text) - tail))
    return None if best is None else best[1]


def shared_prefix(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


def window_role(window: Span, payload: Span) -> int:
    """1 where a window holds most of the payload (or the payload fills most of it), 0
    where it holds none of it, -1 in between: too little to call it either."""
    overlap = min(window[1], payload[1]) - max(window[0], payload[0])
    if overlap <= 0:
        return 0
    smaller = min(window[1] - window[0], payload[1] - payload[0])
    return 1 if overlap * 2 >= smaller else -1
