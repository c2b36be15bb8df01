"""Which activations carry the signal? One extraction, many codebook configurations.

`extract` runs SmolLM2 once over the same seeded corpus sample as bench/quality.py and
keeps, for every window, the mean, max and last-token pooling at many layers. `sweep` then
scores codebook configurations (layer sets, pooling, document-baseline deltas, rank,
smoothing) with the leave-one-origin-group-out protocol of bench/quality.py, without
running the model again, and prints one line of pooled held-out figures per configuration.

    .venv/bin/python bench/explore.py extract --per-file 300 --layers 1,2,3,4,6,8,10,12,16
    .venv/bin/python bench/explore.py sweep --out bench/EXPLORE.md
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from quality import (
    HARD_NEGATIVE_FILES,
    HIDDEN_INJECTION_FILES,
    leave_groups_out,
    subset_metrics,
)
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from alknet_firewall.codebook_fit import ModelIdentity
from alknet_firewall.config import Settings, load_settings
from alknet_firewall.corpus import LabelledRows, corpus_files, load_rows
from alknet_firewall.features import WindowFeatures
from alknet_firewall.model import TransformersDetector
from alknet_firewall.model_files import resolve_model_folder
from alknet_firewall.windows import iter_batches, tokenize_windows

POOLINGS = ("mean", "max", "last")
DEFAULT_STORE = Path("~/.cache/alknet-firewall/explore").expanduser()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    extract = commands.add_parser("extract", help="run the model once, keep all poolings")
    extract.add_argument("--layers", default="1,2,3,4,6,8,10,12,16")
    sweep = commands.add_parser("sweep", help="score configurations on the stored activations")
    sweep.add_argument("--out", default="", help="also write the table here (markdown)")
    sweep.add_argument("--probe", action="store_true", help="also score the logistic probe")
    sweep.add_argument("--only", default="", help="configuration names separated by ;")
    for command in (extract, sweep):
        command.add_argument("--corpus", default="../shared/data/corpus")
        command.add_argument("--per-file", type=int, default=300)
        command.add_argument("--store", type=Path, default=DEFAULT_STORE)
        command.add_argument("--windows", default="128/96", help="window size/stride, tokens")
    args = parser.parse_args()
    size, stride = (int(x) for x in args.windows.split("/"))
    settings = load_settings(None, windows={"size": size, "stride": stride})
    rows = load_rows(
        corpus_files(Path(args.corpus), training_only=False),
        per_file=args.per_file,
        seed=settings.codebook.seed,
    )
    suffix = "" if args.windows == "128/96" else f"-w{size}-{stride}"
    store = args.store / f"per-file-{args.per_file}{suffix}.safetensors"
    if args.command == "extract":
        layers = [int(x) for x in args.layers.split(",")]
        extract_all(rows, layers, settings, store)
        return 0
    return run_sweep(rows, settings, store, args)


def extract_all(rows: LabelledRows, layers: list[int], settings: Settings, store: Path) -> None:
    folder, model_id = resolve_model_folder(settings.model)
    detector = TransformersDetector(folder, layers, model_id=model_id, dtype="float32")
    tokenized = tokenize_windows(
        detector.tokenizer, rows.texts, settings.windows.size, settings.windows.stride
    )
    found = tokenized.windows
    shape = (len(found), len(layers), detector.hidden_size)
    pooled = {name: np.zeros(shape, dtype=np.float32) for name in POOLINGS}
    started = time.time()
    with tqdm(total=sum(len(w.token_ids) for w in found), unit="tok", unit_scale=True) as bar:
        for batch in iter_batches(found, detector.tokenizer, settings.batching.token_budget):
            for name, array in detector.pooled_many(batch, POOLINGS).items():
                pooled[name][batch.windows] = array
            bar.update(batch.real_tokens)
    print(f"extracted {len(found)} windows in {time.time() - started:.0f} s", file=sys.stderr)
    store.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            **{f"pooled.{name}": array for name, array in pooled.items()},
            "doc": np.array([w.doc for w in found], dtype=np.int64),
            "spans": np.array([(w.char_start, w.char_end) for w in found], dtype=np.int64),
            "tokens_per_doc": np.array(tokenized.tokens_per_doc, dtype=np.int64),
            "layers": np.array(layers, dtype=np.int64),
        },
        str(store),
    )


@dataclass(frozen=True)
class Variant:
    """One codebook configuration: feature blocks are (pooling, layer) pairs; a pooling of
    "delta" is the window's mean minus the mean of its document's windows."""

    name: str
    blocks: tuple[tuple[str, int], ...]
    one_signal: bool = False  # one "attack" signal instead of one per attack kind
    rank: int = 48
    smoothing: float = 1.0
    payloads: bool = True  # window labels from located payloads (paired files)


def variants() -> list[Variant]:
    """The configurations compared, named "<signals> <pooling> <layers> [change]"."""

    def blocks(pooling: str, *layers: int) -> tuple[tuple[str, int], ...]:
        if pooling == "mean+delta":
            return blocks("mean", *layers) + blocks("delta", *layers)
        if pooling == "mean+max":
            return blocks("mean", *layers) + blocks("max", *layers)
        return tuple((pooling, layer) for layer in layers)

    best = blocks("mean", 4, 8, 12, 16)
    return [
        Variant("per-kind mean 1,2,4,8 no payloads", blocks("mean", 1, 2, 4, 8), payloads=False),
        Variant("per-kind mean 1,2,4,8", blocks("mean", 1, 2, 4, 8)),
        Variant("per-kind mean 4,8,12,16", best),
        *(
            Variant(f"one mean {','.join(map(str, layers))}", blocks("mean", *layers), True)
            for layers in (
                (1, 2, 4, 8),
                (2, 4, 6, 8),
                (4, 8, 12),
                (4, 8, 12, 16),
                (8, 10, 12, 16),
                (12, 16),
                (3, 6, 10, 12, 16),
            )
        ),
        *(
            Variant(f"one {pooling} 4,8,12,16", blocks(pooling, 4, 8, 12, 16), True)
            for pooling in ("max", "last", "mean+max", "mean+delta")
        ),
        Variant("one mean 4,8,12,16 no payloads", best, True, payloads=False),
        Variant("one mean 4,8,12,16 rank 24", best, True, rank=24),
        Variant("one mean 4,8,12,16 rank 96", best, True, rank=96),
        Variant("one mean 4,8,12,16 smoothing 0.3", best, True, smoothing=0.3),
        Variant("one mean 4,8,12,16 smoothing 3", best, True, smoothing=3.0),
        Variant("one mean 4,8,12,16 rank 16 smoothing 3", best, True, rank=16, smoothing=3.0),
        Variant("one mean 4,8,12,16 rank 24 smoothing 3", best, True, rank=24, smoothing=3.0),
        Variant("one mean 4,8,12,16 rank 32 smoothing 3", best, True, rank=32, smoothing=3.0),
        Variant("one mean 4,8,12,16 rank 24 smoothing 10", best, True, rank=24, smoothing=10.0),
    ]


def block_features(
    stored: dict[str, np.ndarray], blocks: Iterable[tuple[str, int]]
) -> WindowFeatures:
    layers = [int(x) for x in stored["layers"]]
    doc = stored["doc"]
    columns = []
    for pooling, layer in blocks:
        if pooling == "delta":
            vectors = stored["pooled.mean"][:, layers.index(layer), :]
            sums = np.zeros((int(doc.max()) + 1, vectors.shape[1]), dtype=np.float64)
            np.add.at(sums, doc, vectors)
            counts = np.bincount(doc, minlength=sums.shape[0])[:, None]
            columns.append((vectors - (sums / np.maximum(counts, 1))[doc]).astype(np.float32))
        else:
            columns.append(stored[f"pooled.{pooling}"][:, layers.index(layer), :])
    return WindowFeatures(
        pooled=np.stack(columns, axis=1),
        doc=doc,
        spans=stored["spans"],
        tokens_per_doc=stored["tokens_per_doc"],
    )


def run_sweep(rows: LabelledRows, settings: Settings, store: Path, args: argparse.Namespace) -> int:
    if not store.is_file():
        print(f"no stored activations at {store}: run `extract` first", file=sys.stderr)
        return 1
    stored = load_file(str(store))
    labels, files = np.array(rows.labels), np.array(rows.files)
    chosen = [v for v in variants() if not args.only or v.name in args.only.split(";")]
    lines = [
        "| configuration | AUROC | TPR@1% | hard-neg FPR@flag | hidden-inj AUROC | seconds | probe AUROC | probe TPR@1% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    stored_layers = {int(x) for x in stored["layers"]}
    for variant in chosen:
        if not {layer for _, layer in variant.blocks} <= stored_layers:
            continue  # an extraction with fewer layers (e.g. the 64-token windows)
        started = time.time()
        features = block_features(stored, variant.blocks)
        codebook_settings = settings.codebook.model_copy(
            update={
                "rank": variant.rank,
                "smoothing": variant.smoothing,
                "signals": "one" if variant.one_signal else "per_kind",
            }
        )
        trial = settings.model_copy(update={"codebook": codebook_settings})
        identity = ModelIdentity("explore", "explore", list(range(1, len(variant.blocks) + 1)))
        fold_rows = rows if variant.payloads else replace(rows, payloads=[None] * len(rows))
        methods = ("codebook", "probe") if args.probe else ("codebook",)
        held = leave_groups_out(fold_rows, features, identity, trial, methods=methods)
        pooled = subset_metrics(held, labels, np.ones(len(rows), dtype=bool))
        hard = subset_metrics(held, labels, np.isin(files, HARD_NEGATIVE_FILES) & (labels == 0))
        hidden = subset_metrics(held, labels, np.isin(files, HIDDEN_INJECTION_FILES))
        line = (
            f"| {variant.name} | {pooled['codebook']['auroc']:.3f} | "
            f"{pooled['codebook']['tpr_at_1pct_fpr']:.3f} | "
            f"{hard['codebook']['fpr_at_flag']:.3f} | {hidden['codebook']['auroc']:.3f} | "
            f"{time.time() - started:.0f} s | "
            + (
                f"{pooled['probe']['auroc']:.3f} | {pooled['probe']['tpr_at_1pct_fpr']:.3f} |"
                if args.probe
                else "- | - |"
            )
        )
        print(line, flush=True)
        lines.append(line)
    if args.out:
        header = [
            f"# Codebook configurations on held-out origin groups ({args.windows} windows)",
            "",
            f"Command: `.venv/bin/python bench/explore.py sweep --per-file {args.per_file} "
            f"--windows {args.windows}{' --probe' if args.probe else ''} --out {args.out}` "
            f"after `extract --per-file {args.per_file} --windows {args.windows} --layers "
            f"{','.join(str(x) for x in sorted(stored_layers))}` ({len(rows)} rows).",
            "",
            "Leave one origin group out, as in bench/QUALITY.md; pooled over every held-out "
            "row. TPR at 1% FPR; hard-neg FPR@flag: hard negatives at or above each fold's "
            "flag threshold; hidden-inj: bipia and synth_indirect attacks against all "
            'held-out benign rows. Rank 48 and smoothing 1 unless named; "one signal" '
            "fits a single attack signal, the others one per attack kind; window labels come "
            'from located payloads unless "no payloads". seconds: the five folds\' fits.',
            "",
        ]
        Path(args.out).write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
