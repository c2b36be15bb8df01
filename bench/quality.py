"""Detection quality on sources and genres the codebook never saw: leave one group out.

The sample: at most --per-file rows of every corpus file (seeded), plus --poison-per-group
poisoned documents per attack group with their clean twins (alknet_firewall.poison),
whose payloads come from that group and whose hosts come from the benign groups and
structured wrappers paired with it.

For each attack group, fit on the training-allowed rows of the other groups and score:
the held-out group's attacks, the benign groups paired with it, the synthetic documents
carrying its payloads (in host genres also held out) and, once, the evaluation-only files
(never trained on). Every held-out document is scored once, by the fold that held it
out; pooled figures put those scores together. The same splits feed the methods compared:

- `codebook`: the configured codebook (config.toml / --config), its own views;
- `v1`: the recipe of the previous shipped codebook cb-49fcc4c6dcf7 refitted on the same
  folds (unframed windows, mean-pooled layers 4, 8, 12, 16, novelty terms, principal
  axes only, smoothing 3);
- `probe`: a logistic probe on the same views as `codebook` (window level, document =
  worst window);
- `tfidf`: TF-IDF + logistic regression on the text.

    .venv/bin/python bench/quality.py --per-file 400 --poison-per-group 300 --methods codebook,probe,tfidf \
        --seeds 8 --out bench/QUALITY.md

`--seeds N` refits the codebook N - 1 more times with other split seeds (which rows of
each training file fit the densities, the combiner and the flag) and adds the spread of
its pooled figures: at 1% FPR it is wide, so one seed's figure is one draw.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from alknet_firewall.build import features_for, pairing_for, with_poisoned
from alknet_firewall.codebook_fit import ModelIdentity, fit_codebook
from alknet_firewall.config import Settings, load_settings
from alknet_firewall.corpus import EVALUATION_ONLY, LabelledRows, corpus_files, load_rows
from alknet_firewall.features import WindowFeatures, take_docs
from alknet_firewall.metrics import detection_metrics
from alknet_firewall.model import TransformersDetector
from alknet_firewall.poison import WRAPPERS
from alknet_firewall.scoring import score_documents

HARD_NEGATIVE_KIND = "hard_negative"
HIDDEN_KIND = "indirect_injection"
# Text tokens per document; the short buckets are chat-log audit's greetings and replies.
LENGTH_BUCKETS = (
    (1, 4, "1-3"),
    (4, 16, "4-15"),
    (16, 128, "16-127"),
    (128, 512, "128-511"),
    (512, 10**9, "512+"),
)
METHODS = ("codebook", "v1", "probe", "tfidf")
# The previous shipped codebook's recipe, refitted per fold as the `v1` method.
V1_LAYERS = [4, 8, 12, 16]
V1_VIEWS = ["mean4", "mean8", "mean12", "mean16"]

# (train docs, test docs) -> (test scores, flag threshold)
Scorer = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]]


@dataclass
class HeldOutScores:
    """Per method, each document's held-out score (NaN where never held out) and the flag
    threshold of the fold that scored it."""

    scores: dict[str, np.ndarray]
    flag: dict[str, np.ndarray]
    fold: np.ndarray


@dataclass(frozen=True)
class Sample:
    rows: LabelledRows
    features: WindowFeatures  # the configured (framed) views
    identity: ModelIdentity


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sample_arguments(parser)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default="", help="write the markdown report here")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="also refit the codebook with split seeds 1..N-1 (which rows fit the densities, "
        "the combiner and the flag) and report the spread of its pooled figures",
    )
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    settings = load_settings(args.config)
    started = time.time()
    sample = load_sample(args, settings)
    methods = args.methods.split(",")
    scorers: dict[str, Scorer] = {"codebook": codebook_scorer(sample, settings)}
    if "v1" in methods:
        scorers["v1"] = codebook_scorer(
            v1_sample(args, settings, sample.rows), v1_settings(settings)
        )
    if "probe" in methods:
        scorers["probe"] = probe_scorer(sample, settings)
    if "tfidf" in methods:
        scorers["tfidf"] = tfidf_scorer(sample.rows, settings)
    held = leave_groups_out(sample.rows, scorers, args.train_share)
    spread = [pooled_codebook_figures(sample, held)]
    for seed in range(1, args.seeds):
        print(f"split seed {seed}", file=sys.stderr, flush=True)
        scorer = {"codebook": codebook_scorer(sample, with_split_seed(settings, seed))}
        held_again = leave_groups_out(sample.rows, scorer, args.train_share)
        spread.append(pooled_codebook_figures(sample, held_again))
    report = render(sample, held, settings, args, time.time() - started, spread)
    print(report)
    if args.out:
        Path(args.out).write_text(report, encoding="utf-8")
    return 0


def with_split_seed(settings: Settings, seed: int) -> Settings:
    """The settings refitted with split seed `seed` (which training rows fit the densities,
    the combiner and the flag); seed 0 keeps the configured split."""
    reseeded = settings.model_copy(deep=True)
    if seed:
        reseeded.codebook.seed = seed
    return reseeded


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", default="../shared/data/corpus")
    parser.add_argument("--per-file", type=int, default=200, help="seeded sample per file")
    parser.add_argument("--poison-per-group", type=int, default=150)
    parser.add_argument("--config", default=None)
    parser.add_argument(
        "--train-share",
        type=float,
        default=1.0,
        help="fit each fold on this seeded share of its training rows (a learning curve: "
        "the held-out rows stay the same)",
    )


def sample_rows(args: argparse.Namespace, settings: Settings) -> LabelledRows:
    rows = load_rows(
        corpus_files(Path(args.corpus), training_only=False),
        per_file=args.per_file,
        seed=settings.codebook.seed,
    )
    return with_poisoned(rows, args.poison_per_group, settings.codebook.seed)


def load_sample(args: argparse.Namespace, settings: Settings) -> Sample:
    rows = sample_rows(args, settings)
    model = TransformersDetector.from_settings(settings.model, framed=settings.windows.framed)
    features = features_for(model, rows, settings, progress=True)
    identity = ModelIdentity(model.model_id, model.weight_digest, list(model.layers))
    return Sample(rows, features, identity)


def v1_settings(settings: Settings) -> Settings:
    v1 = settings.model_copy(deep=True)
    v1.model.layers = list(V1_LAYERS)
    v1.windows.framed = False
    v1.codebook.views = list(V1_VIEWS)
    v1.codebook.novelty = True
    v1.codebook.discriminant = False
    v1.codebook.smoothing = 3.0
    v1.codebook.length_adjust = False
    return v1


def v1_sample(args: argparse.Namespace, settings: Settings, rows: LabelledRows) -> Sample:
    v1 = v1_settings(settings)
    model = TransformersDetector.from_settings(v1.model, framed=False)
    features = features_for(model, rows, v1, progress=True)
    return Sample(rows, features, ModelIdentity(model.model_id, model.weight_digest, V1_LAYERS))


def fold_plan(rows: LabelledRows) -> list[tuple[str, set[str]]]:
    """(attack group, host genres held out with it): the benign groups and wrappers that
    `build.pairing_for` pairs it with, so its synthetic documents are unseen twice over."""
    return [(group, set(genres)) for group, genres in sorted(pairing_for(rows).hosts.items())]


def fold_masks(rows: LabelledRows, group: str, genres: set[str]) -> np.ndarray:
    """Documents held out in the fold of `group`: its attacks and benign rows, the benign
    groups it is paired with, the synthetic rows in its genres, and the evaluation-only
    files."""
    groups, hosts = np.array(rows.groups), np.array(rows.hosts)
    files = np.array(rows.files)
    synthetic = hosts != ""
    natural = ~synthetic & (
        (groups == group)
        | np.isin(groups, [g for g in genres if g not in WRAPPERS])
        | np.isin(files, list(EVALUATION_ONLY))
    )
    return np.asarray(natural | (synthetic & np.isin(hosts, list(genres))))


def leave_groups_out(
    rows: LabelledRows, scorers: dict[str, Scorer], train_share: float = 1.0
) -> HeldOutScores:
    """Score every document by methods fitted on folds that hold out its group and genres;
    `train_share` < 1 fits on that seeded share of each fold's training rows."""
    if not 0.0 < train_share <= 1.0:
        raise ValueError(f"--train-share must be in (0, 1], got {train_share}")
    kept = np.random.default_rng(0).random(len(rows)) < train_share
    n = len(rows)
    held = HeldOutScores(
        scores={m: np.full(n, np.nan) for m in scorers},
        flag={m: np.full(n, np.nan) for m in scorers},
        fold=np.full(n, -1),
    )
    for fold, (group, genres) in enumerate(fold_plan(rows)):
        test_mask = fold_masks(rows, group, genres)
        train = np.flatnonzero(~test_mask & kept)
        test = np.flatnonzero(test_mask & (held.fold < 0))
        print(
            f"fold {fold}: hold out {group} + {sorted(genres)}: train {train.size}, "
            f"score {test.size}",
            file=sys.stderr,
            flush=True,
        )
        for name, scorer in scorers.items():
            held.scores[name][test], flag = scorer(train, test)
            held.flag[name][test] = flag
        held.fold[test] = fold
    return held


def codebook_scorer(sample: Sample, settings: Settings) -> Scorer:
    def score(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, float]:
        codebook = fit_codebook(
            take_docs(sample.features, train),
            sample.rows.subset(list(train)),
            sample.identity,
            settings.windows,
            settings.codebook,
        )
        scores = score_documents(codebook, take_docs(sample.features, test)).score()
        return scores, codebook.meta.thresholds.flag

    return score


def calibrated_flag(train_scores: np.ndarray, train_labels: np.ndarray, fpr: float) -> float:
    """The baselines get a flag threshold the way the codebook does: the benign (1 - fpr)
    quantile, on their own training documents."""
    return float(np.quantile(train_scores[train_labels == 0], 1.0 - fpr))


def probe_scorer(sample: Sample, settings: Settings) -> Scorer:
    features, labels = sample.features, np.array(sample.rows.labels)
    flat = np.concatenate([features.views[v] for v in settings.codebook.views], axis=1)

    def score(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, float]:
        in_train = np.isin(features.doc, train)
        scaler = StandardScaler().fit(flat[in_train])
        probe = LogisticRegression(C=0.05, class_weight="balanced", max_iter=3000)
        probe.fit(scaler.transform(flat[in_train]), labels[features.doc[in_train]])
        window_scores = probe.decision_function(scaler.transform(flat))
        doc_scores = np.full(len(labels), -np.inf)
        np.maximum.at(doc_scores, features.doc, window_scores)
        flag = calibrated_flag(doc_scores[train], labels[train], settings.codebook.flag_fpr)
        return doc_scores[test], flag

    return score


def tfidf_scorer(rows: LabelledRows, settings: Settings) -> Scorer:
    labels = np.array(rows.labels)

    def score(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, float]:
        vectorizer = TfidfVectorizer(
            ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True
        )
        x_train = vectorizer.fit_transform([rows.texts[i] for i in train])
        model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=3000)
        model.fit(x_train, labels[train])
        flag = calibrated_flag(
            model.decision_function(x_train), labels[train], settings.codebook.flag_fpr
        )
        return model.decision_function(vectorizer.transform([rows.texts[i] for i in test])), flag

    return score


def subset_metrics(
    held: HeldOutScores, labels: np.ndarray, mask: np.ndarray
) -> dict[str, dict[str, float | int | None]]:
    """Metrics per method over held-out documents in mask: its attacks against all
    held-out benign documents (AUROC, TPR at 1% FPR), and its own rows' flag rates."""
    scored = held.fold >= 0
    benign = scored & (labels == 0)
    has_attacks = (mask & (labels == 1)).any()
    chosen = scored & ((mask & (labels == 1)) | benign) if has_attacks else scored & mask
    own = scored & mask
    out = {}
    for method in held.scores:
        metrics = detection_metrics(labels[chosen], held.scores[method][chosen], np.inf)
        flagged = held.scores[method][own] >= held.flag[method][own]
        own_benign, own_attacks = labels[own] == 0, labels[own] == 1
        metrics["fpr_at_flag"] = float(flagged[own_benign].mean()) if own_benign.any() else None
        metrics["tpr_at_flag"] = float(flagged[own_attacks].mean()) if own_attacks.any() else None
        out[method] = metrics
    return out


# The pooled codebook figures compared across split seeds: (label, subset, metric).
SPREAD_FIGURES = (
    ("AUROC", "all", "auroc"),
    ("TPR@1%", "all", "tpr_at_1pct_fpr"),
    ("hidden AUROC", "hidden", "auroc"),
    ("hidden TPR@1%", "hidden", "tpr_at_1pct_fpr"),
    ("attacks at flag", "all", "tpr_at_flag"),
    ("benign at flag", "all", "fpr_at_flag"),
)


def pooled_codebook_figures(sample: Sample, held: HeldOutScores) -> list[float | None]:
    """The codebook's SPREAD_FIGURES in one leave-groups-out run."""
    labels, kinds = np.array(sample.rows.labels), np.array(sample.rows.kinds)
    subsets = {"all": np.ones(len(labels), dtype=bool), "hidden": kinds == HIDDEN_KIND}
    metrics = {
        name: subset_metrics(held, labels, mask)["codebook"] for name, mask in subsets.items()
    }
    return [metrics[subset][metric] for _, subset, metric in SPREAD_FIGURES]


def spread_table(spread: list[list[float | None]]) -> list[str]:
    """One row per split seed, then the mean and range of each column."""
    lines = [
        "## Split-seed spread (codebook, pooled)",
        "",
        "The seed decides which rows of each training file fit the densities, the combiner "
        "and the flag threshold; the held-out rows are the same. Seed 0 is the one every "
        "table above uses (and the shipped codebook's). A difference between configurations "
        "smaller than this spread is not a finding.",
        "",
        "| split seed | " + " | ".join(label for label, _, _ in SPREAD_FIGURES) + " |",
        "|---|" + "---|" * len(SPREAD_FIGURES),
    ]
    lines += [f"| {seed} | " + " | ".join(map(fmt, row)) + " |" for seed, row in enumerate(spread)]
    summary = []
    for column in zip(*spread, strict=True):
        values = np.array([v for v in column if v is not None])
        summary.append(
            f"{values.mean():.3f} ({values.min():.3f}-{values.max():.3f})" if values.size else "-"
        )
    lines += ["| mean (range) | " + " | ".join(summary) + " |", ""]
    return lines


def render(
    sample: Sample,
    held: HeldOutScores,
    settings: Settings,
    args: argparse.Namespace,
    seconds: float,
    spread: list[list[float | None]],
) -> str:
    rows = sample.rows
    labels, files, kinds = np.array(rows.labels), np.array(rows.files), np.array(rows.kinds)
    hosts = np.array(rows.hosts)
    tokens = sample.features.tokens_per_doc
    methods = list(held.scores)
    c = settings.codebook
    lines = [
        "# Detection quality on held-out groups and genres",
        "",
        f"Command: `.venv/bin/python bench/quality.py --per-file {args.per_file} "
        f"--poison-per-group {args.poison_per_group} --methods {','.join(methods)}"
        f"{f' --seeds {args.seeds}' if args.seeds > 1 else ''}"
        f"{' --out ' + args.out if args.out else ''}` ({seconds:.0f} s on this machine).",
        "",
        f"Codebook configuration: layers {settings.model.layers}, windows "
        f"{settings.windows.size}/{settings.windows.stride} tokens "
        f"{'inside the task frame' if settings.windows.framed else 'unframed'}, views "
        f"{', '.join(c.views)}, novelty {'on' if c.novelty else 'off'}, discriminant axis "
        f"{'on' if c.discriminant else 'off'}, length trend "
        f"{'taken out' if c.length_adjust else 'kept'}, rank {c.rank}, "
        f"smoothing {c.smoothing}, densities weighted by {c.density_weights}, "
        f"flag at {c.flag_fpr:.1%} benign FPR. Sample: at most "
        f"{args.per_file} rows per corpus file (seed {c.seed}) and "
        f"{args.poison_per_group} poisoned documents per attack group with their clean "
        f"twins: {len(rows)} rows, {int((hosts != '').sum())} synthetic.",
        "",
        "Folds (attack group + the host genres held out with it; evaluation-only files are "
        "held out in every fold and scored in the first): "
        + "; ".join(f"{g} + {', '.join(sorted(h))}" for g, h in fold_plan(rows)),
        "",
        "AUROC and TPR@1% compare a subset's attacks with all held-out benign rows; "
        "FPR@flag and TPR@flag are the shares of the subset's own benign and attack rows "
        "at or above the flag threshold of the fold that scored them.",
        "",
    ]

    def table(title: str, subsets: list[tuple[str, np.ndarray]]) -> None:
        header = " | ".join(
            f"{m} AUROC | {m} TPR@1% | {m} FPR@flag | {m} TPR@flag" for m in methods
        )
        lines.extend(
            [
                f"## {title}",
                "",
                f"| subset | n | {header} |",
                "|---|---|" + "---|" * (4 * len(methods)),
            ]
        )
        for name, mask in subsets:
            n = int((mask & (held.fold >= 0)).sum())
            if not n:
                continue
            metrics = subset_metrics(held, labels, mask)
            cells = []
            for method in methods:
                m = metrics[method]
                cells += [
                    fmt(m["auroc"]),
                    fmt(m["tpr_at_1pct_fpr"]),
                    fmt(m["fpr_at_flag"]),
                    fmt(m["tpr_at_flag"]),
                ]
            lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
        lines.append("")

    everything = np.ones(len(rows), dtype=bool)
    synthetic = hosts != ""
    table(
        "Pooled",
        [
            ("all held-out rows", everything),
            ("injections hidden in documents", kinds == HIDDEN_KIND),
            ("  of them in corpus files", (kinds == HIDDEN_KIND) & ~synthetic),
            (
                "  of them synthetic (unseen payload group and genre)",
                (kinds == HIDDEN_KIND) & synthetic,
            ),
            ("hard negatives (FPR)", (kinds == HARD_NEGATIVE_KIND) & (labels == 0)),
        ],
    )
    table("Per kind", [(k, kinds == k) for k in sorted(set(rows.kinds))])
    table(
        "By length in tokens (attacks: TPR; benign: FPR)",
        [(name, (tokens >= low) & (tokens < high)) for low, high, name in LENGTH_BUCKETS],
    )
    table(
        "Per corpus file", [(f, (files == f) & ~synthetic) for f in sorted(set(files[~synthetic]))]
    )
    table("Per synthetic host genre", [(g, hosts == g) for g in sorted(set(hosts[synthetic]))])
    if len(spread) > 1:
        lines += spread_table(spread)
    return "\n".join(lines)


def fmt(value: float | int | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
