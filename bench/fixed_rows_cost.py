"""What the fixed-row GEMM blocks (fixed_rows.py) cost on this CPU.

One detector with the configured model, dtype and windows; between rounds its linear
layers are switched between plain `torch.nn.Linear` and blocks of each size asked for
(same weights, same texts, same token budget). Rounds rotate the order so that a slow
spell of a shared machine does not land on one variant. Prints tokens/s per round and
the median ratio to plain; the last line is JSON.

    .venv/bin/python bench/fixed_rows_cost.py                  # 12 texts per corpus file
    .venv/bin/python bench/fixed_rows_cost.py --block-rows 256,1024 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from alknet_firewall.config import load_settings
from alknet_firewall.corpus import corpus_files
from alknet_firewall.features import extract
from alknet_firewall.fixed_rows import FixedRowsLinear
from alknet_firewall.model import TransformersDetector, forward_token_budget

PLAIN = "plain"


def sample_texts(corpus: Path, per_file: int, seed: int) -> list[str]:
    """`per_file` seeded texts from every corpus file, lengths as they come."""
    rng = random.Random(seed)
    texts: list[str] = []
    for path in corpus_files(corpus, training_only=False):
        with path.open(encoding="utf-8") as lines:
            rows = [json.loads(line)["text"] for line in lines]
        texts += rng.sample(rows, min(per_file, len(rows)))
    return texts


def switch(model: torch.nn.Module, variant: str) -> None:
    """Every linear layer to plain, or to blocks of `variant` rows, in place."""
    layer_class: type[torch.nn.Linear] = torch.nn.Linear
    if variant != PLAIN:
        layer_class = type(f"FixedRows{variant}", (FixedRowsLinear,), {"block_rows": int(variant)})
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.__class__ = layer_class


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="../shared/data/corpus")
    parser.add_argument("--per-file", type=int, default=12, help="seeded texts per file")
    parser.add_argument("--block-rows", default="256", help="block sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", default=None)
    args = parser.parse_args()
    settings = load_settings(args.config)
    detector = TransformersDetector.from_settings(settings.model, framed=settings.windows.framed)
    budget = forward_token_budget(settings.batching.token_budget, detector)
    texts = sample_texts(Path(args.corpus), args.per_file, settings.codebook.seed)
    variants = [PLAIN, *(size.strip() for size in args.block_rows.split(","))]
    print(
        f"{len(texts)} texts; model {detector.dtype} on {detector.device}, "
        f"{torch.get_num_threads()} threads, token budget {budget}",
        flush=True,
    )
    extract(detector, texts[:20], settings.windows, budget)  # warm-up, not counted
    rates: dict[str, list[float]] = {variant: [] for variant in variants}
    for round_ in range(args.rounds):
        shift = round_ % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            switch(detector.model, variant)
            started = time.perf_counter()
            features = extract(detector, texts, settings.windows, budget)
            rate = float(features.tokens_per_doc.sum()) / (time.perf_counter() - started)
            rates[variant].append(rate)
            print(f"round {round_}: {variant:>6} {rate:,.0f} tokens/s", flush=True)
    medians = {variant: statistics.median(values) for variant, values in rates.items()}
    for variant in variants[1:]:
        print(
            f"blocks of {variant} rows / plain: {medians[variant] / medians[PLAIN]:.2f} "
            f"(median tokens/s {medians[variant]:,.0f} against {medians[PLAIN]:,.0f})"
        )
    print(
        json.dumps(
            {
                "texts": len(texts),
                "tokens_per_s": {
                    variant: [round(r) for r in values] for variant, values in rates.items()
                },
                "ratio_to_plain": {
                    variant: round(medians[variant] / medians[PLAIN], 3) for variant in variants[1:]
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
