"""Which views carry the signal? One extraction, many codebook configurations.

Runs (or reads from the activation cache) the framed model over the same sample as
bench/quality.py, then scores codebook configurations (which views, novelty terms, a discriminant axis, rank)
with the same leave-one-group-out protocol, without running the model again: one line of
pooled held-out figures per configuration.

    .venv/bin/python bench/explore.py --per-file 200 --poison-per-group 150 --out bench/EXPLORE.md

`--seeds N` fits every configuration with split seeds 0..N-1 and prints each figure's mean
(TPR@1% moves by ten points between seeds of one configuration, AUROC by about 0.01).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from quality import (
    HARD_NEGATIVE_KIND,
    HIDDEN_KIND,
    add_sample_arguments,
    codebook_scorer,
    leave_groups_out,
    load_sample,
    subset_metrics,
    with_split_seed,
)

from alknet_firewall.config import Settings, load_settings


@dataclass(frozen=True)
class Variant:
    """A codebook configuration: `codebook` holds the [codebook] settings it changes."""

    name: str
    codebook: dict[str, Any] = field(default_factory=dict)


def variants(layers: list[int]) -> list[Variant]:
    means = [f"mean{layer}" for layer in layers]
    deep = f"final{layers[-1]}"
    # The rows before length adjustment were measured with the earlier defaults; they keep
    # them, so each row still means what its name says.
    before = {"length_adjust": False, "smoothing": 3.0}
    plain = {"discriminant": False, **before}
    chosen = ["attention", "mean8", "mean16"]
    shipped = [*chosen, "max16"]
    return [
        Variant("means (framed), novelty", {"views": means, "novelty": True, **plain}),
        Variant("means (framed)", {"views": means, **plain}),
        Variant("attention", {"views": ["attention"], **plain}),
        Variant("attention, novelty", {"views": ["attention"], "novelty": True, **plain}),
        Variant("attention, discriminant", {"views": ["attention"], **before}),
        Variant(deep, {"views": [deep], **plain}),
        Variant("attention + mean8, mean16", {"views": chosen, **plain}),
        Variant("attention + mean8, mean16, novelty", {"views": chosen, "novelty": True, **plain}),
        Variant("attention + means", {"views": ["attention", *means], **plain}),
        Variant(f"attention + {deep}", {"views": ["attention", deep], **plain}),
        Variant("attention + mean8, mean16, discriminant", {"views": chosen, **before}),
        Variant(
            f"attention + mean8, mean16 + {deep}, discriminant",
            {"views": [*chosen, deep], **before},
        ),
        Variant(
            "attention + mean8, mean16, discriminant, rank 24",
            {"views": chosen, "rank": 24, **before},
        ),
        Variant(
            "attention + mean8, mean16, discriminant, smoothing 30",
            {"views": chosen, "length_adjust": False, "smoothing": 30.0},
        ),
        Variant(
            "chosen, length adjusted", {"views": chosen, "length_adjust": True, "smoothing": 3.0}
        ),
        Variant(
            "chosen, length adjusted, smoothing 10",
            {"views": chosen, "length_adjust": True, "smoothing": 10.0},
        ),
        Variant(
            "chosen, length adjusted, smoothing 30",
            {"views": chosen, "length_adjust": True, "smoothing": 30.0},
        ),
        Variant(
            "chosen, length adjusted, smoothing 100",
            {"views": chosen, "length_adjust": True, "smoothing": 100.0},
        ),
        Variant(
            "chosen, length adjusted, rank 32",
            {"views": chosen, "length_adjust": True, "rank": 32, "smoothing": 3.0},
        ),
        Variant(
            "attention + means, length adjusted",
            {"views": ["attention", *means], "length_adjust": True, "smoothing": 3.0},
        ),
        Variant("cb-71bff6805201: attention, mean8, mean16", {"views": chosen}),
        Variant("shipped", {}),  # the config defaults: + max16
        # each window weighing 1 in the densities, as before the twelfth stop
        Variant("shipped, densities by window", {"density_weights": "window"}),
        Variant("attention, shipped settings", {"views": ["attention"]}),
        # each dimension's maximum over the window beside (or instead of) its mean
        Variant("attention + max8, max16", {"views": ["attention", "max8", "max16"]}),
        Variant("shipped + max8", {"views": [*chosen, "max8", "max16"]}),
        Variant("shipped, max12 for max16", {"views": [*chosen, "max12"]}),
        Variant("shipped, max20 for max16", {"views": [*chosen, "max20"]}),
        Variant("shipped + max20", {"views": [*chosen, "max16", "max20"]}),
        # the frame's last token (where the answer starts) at one layer, beside the shipped views
        Variant("shipped + final12", {"views": [*shipped, "final12"]}),
        Variant("shipped + final16", {"views": [*shipped, "final16"]}),
        Variant("shipped + final20", {"views": [*shipped, "final20"]}),
        Variant("shipped + mean12", {"views": [*shipped, "mean12"]}),
        Variant("shipped + mean20", {"views": [*shipped, "mean20"]}),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sample_arguments(parser)
    parser.add_argument("--only", default="", help="configuration names separated by ;")
    parser.add_argument("--out", default="", help="also write the table here (markdown)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="fit each configuration with split seeds 0..N-1 and print the mean of each "
        "figure (and the range of TPR@1%%): one seed's TPR@1%% swings by ten points",
    )
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    settings = load_settings(args.config)
    started = time.time()
    sample = load_sample(args, settings)
    print(f"sample ready in {time.time() - started:.0f} s", file=sys.stderr)
    labels, kinds = np.array(sample.rows.labels), np.array(sample.rows.kinds)
    tokens = sample.features.tokens_per_doc
    subsets = {
        "all": np.ones(len(labels), dtype=bool),
        "hidden": kinds == HIDDEN_KIND,
        "hard": (kinds == HARD_NEGATIVE_KIND) & (labels == 0),
        "short": tokens < 16,
    }
    spread = " | TPR@1% range" if args.seeds > 1 else ""
    lines = [
        "| configuration | AUROC | TPR@1% | hidden AUROC | hidden TPR@1% | hard-neg FPR@flag "
        f"| 1-15 tok benign FPR@flag | 1-15 tok attack TPR@flag{spread} | seconds |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if args.seeds > 1 else ""),
    ]
    print("\n".join(lines), flush=True)
    for variant in variants(settings.model.layers):
        if args.only and variant.name not in args.only.split(";"):
            continue
        began = time.time()
        runs = []
        for seed in range(args.seeds):
            configured = with_split_seed(configure(settings, variant), seed)
            held = leave_groups_out(
                sample.rows, {"codebook": codebook_scorer(sample, configured)}, args.train_share
            )
            runs.append(
                {
                    figure: subset_metrics(held, labels, subsets[subset])["codebook"][metric]
                    for figure, (subset, metric) in FIGURES.items()
                }
            )
        m = {figure: mean_of(run[figure] for run in runs) for figure in FIGURES}
        tprs = [run["tpr"] for run in runs if run["tpr"] is not None]
        ranged = f" | {min(tprs):.3f}-{max(tprs):.3f}" if args.seeds > 1 and tprs else ""
        line = (
            f"| {variant.name} | {fmt(m['auroc'])} | {fmt(m['tpr'])} "
            f"| {fmt(m['hidden_auroc'])} | {fmt(m['hidden_tpr'])} "
            f"| {fmt(m['hard_fpr'])} | {fmt(m['short_fpr'])} "
            f"| {fmt(m['short_tpr'])}{ranged} | {time.time() - began:.0f} |"
        )
        lines.append(line)
        print(line, flush=True)
    if args.out:
        header = [
            "# Codebook configurations on held-out groups and genres",
            "",
            f"Command: `.venv/bin/python bench/explore.py --per-file {args.per_file} "
            f"--poison-per-group {args.poison_per_group}"
            f"{f' --seeds {args.seeds}' if args.seeds > 1 else ''} --out {args.out}` "
            f"({time.time() - started:.0f} s). Model layers {settings.model.layers}, windows "
            f"{settings.windows.size}/{settings.windows.stride} read inside the task frame; "
            "folds, sample and metrics as in bench/QUALITY.md. `hidden`: injections hidden in "
            "documents (corpus and synthetic); TPR@1% against all held-out benign rows."
            + (
                f" Every figure is the mean over split seeds 0-{args.seeds - 1}."
                if args.seeds > 1
                else ""
            ),
            "",
        ]
        Path(args.out).write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    return 0


# Each column of the table: (subset, metric of subset_metrics).
FIGURES = {
    "auroc": ("all", "auroc"),
    "tpr": ("all", "tpr_at_1pct_fpr"),
    "hidden_auroc": ("hidden", "auroc"),
    "hidden_tpr": ("hidden", "tpr_at_1pct_fpr"),
    "hard_fpr": ("hard", "fpr_at_flag"),
    "short_fpr": ("short", "fpr_at_flag"),
    "short_tpr": ("short", "tpr_at_flag"),
}


def mean_of(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return float(np.mean(known)) if known else None


def configure(settings: Settings, variant: Variant) -> Settings:
    configured = settings.model_copy(deep=True)
    configured.codebook = configured.codebook.model_copy(update=variant.codebook)
    return configured


def fmt(value: float | int | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
