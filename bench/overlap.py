"""Tokenising the next micro-batch during the forward pass: how much there is to hide,
and whether the worker's batcher hides it. Real model, ratios within one run.

Messages of corpus documents go through the worker's `MicroBatcher` (no Redis, no
Celery), all in flight at once as under load, twice over in alternation:
  serial     `screen_batch` as one step: tokenising inside the forward pass (as before);
  overlap    `prepare` on the collector thread, `screen_prepared` on the runner.
The overlap runs also time each message's `prepare` (refusals, tokenising into windows)
against the forward passes (`screen_prepared`: batch planning, the model, scoring).

    .venv/bin/python bench/overlap.py --messages 8 --docs 4 --rounds 2
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alknet_firewall.config import load_settings
from alknet_firewall.corpus import corpus_files, load_rows
from alknet_firewall.firewall import Firewall
from alknet_firewall.queue.settings import CHARS_PER_TOKEN
from alknet_firewall.screening import Stages, unstaged
from alknet_firewall_worker.batching import BatchStats, MicroBatcher


def sample_messages(corpus: str, messages: int, docs: int, seed: int) -> list[list[str]]:
    """Seeded messages of corpus documents (its real length mix)."""
    rows = load_rows(corpus_files(Path(corpus), training_only=False))
    chosen = random.Random(seed).sample(range(len(rows)), messages * docs)
    texts = [rows.texts[i] for i in chosen]
    return [texts[i : i + docs] for i in range(0, len(texts), docs)]


def drain(
    screen: Stages[Any], messages: list[list[str]], budget: int
) -> tuple[float, list[BatchStats], list[list[Any]]]:
    """Every message submitted at once (as `concurrency` task threads would): seconds
    from the first submit to the last verdict, the forward passes, the verdicts."""
    passes: list[BatchStats] = []
    batcher = MicroBatcher(
        screen,
        token_budget=budget,
        max_parcels=len(messages),
        max_wait_s=0.05,
        time_limit_s=3600,
        on_batch=passes.append,
        on_overrun=lambda _seconds: None,
    )
    began = time.perf_counter()
    futures = [batcher.submit(message) for message in messages]
    results = [future.result() for future in futures]
    seconds = time.perf_counter() - began
    batcher.close()
    return seconds, passes, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="../shared/data/corpus")
    parser.add_argument("--messages", type=int, default=6)
    parser.add_argument("--docs", type=int, default=4, help="documents per message")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    firewall = Firewall.from_settings(load_settings())
    messages = sample_messages(args.corpus, args.messages, args.docs, args.seed)
    tokens = [sum(len(t) for t in m) // CHARS_PER_TOKEN for m in messages]
    budget = 2 * max(tokens)  # about two messages per batch: several passes to overlap
    print(f"{args.messages} messages x {args.docs} docs, ~{sum(tokens)} tokens (chars/4)")
    firewall.screen_batch([t for m in messages for t in m])  # warm-up: every batch shape

    prepare_s: list[float] = []

    def timed_prepare(texts: Sequence[str]) -> Any:
        began = time.perf_counter()
        try:
            return firewall.prepare(texts)
        finally:
            prepare_s.append(time.perf_counter() - began)

    modes: dict[str, Stages[Any]] = {
        "serial": unstaged(firewall.screen_batch),
        "overlap": Stages(timed_prepare, firewall.screen_prepared),
    }
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    verdicts: dict[str, list[list[Any]]] = {}
    pass_s: list[float] = []
    for _ in range(args.rounds):
        for name, screen in modes.items():
            took, passes, results = drain(screen, messages, budget)
            seconds[name].append(took)
            verdicts[name] = results
            if name == "overlap":
                pass_s += [p.seconds for p in passes]
            print(f"{name:8s} {took:7.2f} s  passes (docs): {[p.size for p in passes]}")
    assert verdicts["serial"] == verdicts["overlap"], "the overlap changed a verdict"
    share = sum(prepare_s) / (sum(prepare_s) + sum(pass_s))
    print(
        f"overlap runs: prepare {sum(prepare_s):.3f} s in all ({len(prepare_s)} messages), "
        f"forward passes {sum(pass_s):.1f} s: preparing is {share:.2%} of the two"
    )
    ratios = [o / s for s, o in zip(seconds["serial"], seconds["overlap"], strict=True)]
    print(f"overlap / serial per round: {', '.join(f'{r:.3f}' for r in ratios)}; same verdicts")
    # A worker's message at the default message_docs, tokenised alone (no model).
    big = [t for m in messages for t in m][:64]
    tokenise_s: list[float] = []
    for _ in range(5):
        began = time.perf_counter()
        firewall.prepare(big)
        tokenise_s.append(time.perf_counter() - began)
    print(
        f"prepare of {len(big)} documents: {statistics.median(tokenise_s) * 1e3:.1f} ms (median of 5)"
    )


if __name__ == "__main__":
    main()
