"""Detection quality on sources the codebook never saw: leave one origin group out.

For each origin group that holds attacks, fit on the training-allowed files of the other
groups and score the held-out group, plus a rotating share of the benign groups and the
evaluation-only files (never trained on). Every held-out document is scored once, by the
fold that held it out; pooled figures put those scores together. The same splits feed two
baselines: TF-IDF + logistic regression on the text, and a logistic probe on the same
pooled activations (window level, document = worst window, like the codebook).

    .venv/bin/python bench/quality.py --corpus ../shared/data/corpus --out bench/QUALITY.md
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from alknet_firewall.build import features_for
from alknet_firewall.codebook_fit import ModelIdentity, fit_codebook
from alknet_firewall.config import Settings, load_settings
from alknet_firewall.corpus import EVALUATION_ONLY, LabelledRows, corpus_files, load_rows
from alknet_firewall.features import WindowFeatures, concat, select_docs
from alknet_firewall.metrics import detection_metrics
from alknet_firewall.model import TransformersDetector
from alknet_firewall.scoring import score_documents

ATTACK_GROUPS = ("bipia", "tasktracker", "cyberseceval2", "jailbreakbench", "inthewild")
HARD_NEGATIVE_FILES = (
    "notinject",
    "owasp_cheatsheets",
    "tldr_pages",
    "awesome_chatgpt_prompts",
    "gpteacher_roleplay",
    "cyberseceval2_prompt_injection",
)
HIDDEN_INJECTION_FILES = ("bipia", "synth_indirect_tasktracker_x_wikitext")
LENGTH_BUCKETS = ((0, 512, "< 512"), (512, 2048, "512-2k"), (2048, 10**9, "> 2k"))
METHODS = ("codebook", "probe", "tfidf")


@dataclass
class HeldOutScores:
    """Per method, each document's held-out score (NaN where never held out) and the flag
    threshold of the fold that scored it."""

    scores: dict[str, np.ndarray]
    flag: dict[str, np.ndarray]
    fold: np.ndarray


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="../shared/data/corpus")
    parser.add_argument("--per-file", type=int, default=300, help="seeded sample per file")
    parser.add_argument("--config", default=None)
    parser.add_argument("--out", default="", help="write the markdown report here")
    args = parser.parse_args()
    settings = load_settings(args.config)
    started = time.time()
    rows = load_rows(
        corpus_files(Path(args.corpus), training_only=False),
        per_file=args.per_file,
        seed=settings.codebook.seed,
    )
    model = TransformersDetector.from_settings(settings.model)
    features = features_for(model, rows, settings, progress=True)
    identity = ModelIdentity(model.model_id, model.weight_digest, list(model.layers))
    held = leave_groups_out(rows, features, identity, settings)
    report = render(rows, features, held, settings, args, time.time() - started)
    print(report)
    if args.out:
        Path(args.out).write_text(report, encoding="utf-8")
    return 0


def fold_plan(rows: LabelledRows) -> list[tuple[str, set[str]]]:
    """(attack group, benign groups) held out per fold; benign groups rotate over folds."""
    benign_groups = sorted(
        {
            g
            for g, f, label in zip(rows.groups, rows.files, rows.labels, strict=True)
            if f not in EVALUATION_ONLY and g not in ATTACK_GROUPS and label == 0
        }
    )
    plan = []
    for index, group in enumerate(ATTACK_GROUPS):
        plan.append((group, set(benign_groups[index :: len(ATTACK_GROUPS)])))
    return plan


def leave_groups_out(
    rows: LabelledRows,
    features: WindowFeatures,
    identity: ModelIdentity,
    settings: Settings,
    methods: tuple[str, ...] = METHODS,
) -> HeldOutScores:
    n = len(rows)
    held = HeldOutScores(
        scores={m: np.full(n, np.nan) for m in methods},
        flag={m: np.full(n, np.nan) for m in methods},
        fold=np.full(n, -1),
    )
    groups, files = np.array(rows.groups), np.array(rows.files)
    evaluation_only = np.isin(files, list(EVALUATION_ONLY))
    for fold, (attack_group, benign_groups) in enumerate(fold_plan(rows)):
        test_mask = (
            (groups == attack_group) | np.isin(groups, list(benign_groups)) | evaluation_only
        )
        train = np.flatnonzero(~test_mask)
        test = np.flatnonzero(test_mask & (held.fold < 0) | (groups == attack_group))
        print(
            f"fold {fold}: hold out {attack_group} + {sorted(benign_groups)}: "
            f"train {train.size}, score {test.size}",
            file=sys.stderr,
        )
        train_rows, train_features = rows.subset(list(train)), take(features, train)
        test_features = take(features, test)
        codebook = fit_codebook(
            train_features, train_rows, identity, settings.windows, settings.codebook
        )
        held.scores["codebook"][test] = score_documents(codebook, test_features).score()
        held.flag["codebook"][test] = codebook.meta.thresholds.flag
        for name, scorer in (("probe", probe_scores), ("tfidf", tfidf_scores)):
            if name not in methods:
                continue
            scores, flag = scorer(rows, features, train, test, settings)
            held.scores[name][test], held.flag[name][test] = scores, flag
        held.fold[test] = fold
    return held


def take(features: WindowFeatures, docs: np.ndarray) -> WindowFeatures:
    return concat([select_docs(features, int(d), int(d) + 1) for d in docs])


def calibrated_flag(
    train_scores: np.ndarray, train_labels: np.ndarray, settings: Settings
) -> float:
    """The baselines get a flag threshold the same way the codebook does: the benign
    (1 - flag_fpr) quantile, on their own training documents."""
    return float(np.quantile(train_scores[train_labels == 0], 1.0 - settings.codebook.flag_fpr))


def probe_scores(
    rows: LabelledRows,
    features: WindowFeatures,
    train: np.ndarray,
    test: np.ndarray,
    settings: Settings,
) -> tuple[np.ndarray, float]:
    labels = np.array(rows.labels)
    flat = features.pooled.reshape(len(features.doc), -1)
    in_train = np.isin(features.doc, train)
    scaler = StandardScaler().fit(flat[in_train])
    probe = LogisticRegression(C=0.05, class_weight="balanced", max_iter=3000)
    probe.fit(scaler.transform(flat[in_train]), labels[features.doc[in_train]])
    window_scores = probe.decision_function(scaler.transform(flat))
    doc_scores = np.full(len(rows), -np.inf)
    np.maximum.at(doc_scores, features.doc, window_scores)
    return doc_scores[test], calibrated_flag(doc_scores[train], labels[train], settings)


def tfidf_scores(
    rows: LabelledRows,
    features: WindowFeatures,
    train: np.ndarray,
    test: np.ndarray,
    settings: Settings,
) -> tuple[np.ndarray, float]:
    labels = np.array(rows.labels)
    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True
    )
    x_train = vectorizer.fit_transform([rows.texts[i] for i in train])
    model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=3000)
    model.fit(x_train, labels[train])
    train_scores = model.decision_function(x_train)
    test_scores = model.decision_function(vectorizer.transform([rows.texts[i] for i in test]))
    return test_scores, calibrated_flag(train_scores, labels[train], settings)


def subset_metrics(held: HeldOutScores, labels: np.ndarray, mask: np.ndarray) -> dict[str, dict]:
    """Metrics per method over held-out documents in mask (attacks vs all held-out benign)."""
    scored = held.fold >= 0
    benign = scored & (labels == 0)
    has_attacks = (mask & (labels == 1)).any()
    chosen = scored & ((mask & (labels == 1)) | benign) if has_attacks else scored & mask
    out = {}
    for method in held.scores:
        scores = held.scores[method][chosen]
        flagged = scores >= held.flag[method][chosen]
        metrics = detection_metrics(labels[chosen], scores, np.inf)
        negatives = labels[chosen] == 0
        if not has_attacks:
            negatives = np.ones_like(negatives)
        metrics["fpr_at_flag"] = float(flagged[negatives].mean()) if negatives.any() else None
        metrics["tpr_at_flag"] = float(flagged[~negatives].mean()) if (~negatives).any() else None
        out[method] = metrics
    return out


def render(
    rows: LabelledRows,
    features: WindowFeatures,
    held: HeldOutScores,
    settings: Settings,
    args: argparse.Namespace,
    seconds: float,
) -> str:
    labels, files, kinds = np.array(rows.labels), np.array(rows.files), np.array(rows.kinds)
    tokens = features.tokens_per_doc
    lines = [
        "# Detection quality on held-out origin groups",
        "",
        f"Command: `.venv/bin/python bench/quality.py --corpus {args.corpus} --per-file {args.per_file}"
        f"{' --out ' + args.out if args.out else ''}` ({seconds:.0f} s on this machine).",
        "",
        f"Codebook configuration: layers {settings.model.layers}, windows {settings.windows.size}/"
        f"{settings.windows.stride} tokens, pooling {settings.windows.pooling}, rank "
        f"{settings.codebook.rank}, smoothing {settings.codebook.smoothing}, flag at "
        f"{settings.codebook.flag_fpr:.1%} benign FPR. Sample: at most {args.per_file} rows per file "
        f"(seed {settings.codebook.seed}), {len(rows)} rows.",
        "",
        "Folds (attack group held out + benign groups held out; evaluation-only files are "
        "held out in every fold): "
        + "; ".join(f"{g} + {', '.join(sorted(b))}" for g, b in fold_plan(rows)),
        "",
        "AUROC and TPR at 1% FPR compare a subset's attacks with all held-out benign rows; "
        "FPR@flag is the share of the subset's benign rows at or above the flag threshold "
        "of the fold that scored them.",
        "",
    ]

    def table(title: str, subsets: list[tuple[str, np.ndarray]]) -> None:
        lines.extend(
            [
                f"## {title}",
                "",
                "| subset | n | "
                + " | ".join(f"{m} AUROC | {m} TPR@1% | {m} FPR@flag" for m in METHODS)
                + " |",
                "|---|---|" + "---|" * (3 * len(METHODS)),
            ]
        )
        for name, mask in subsets:
            if not (mask & (held.fold >= 0)).any():
                continue
            metrics = subset_metrics(held, labels, mask)
            cells = []
            for method in METHODS:
                m = metrics[method]
                cells += [fmt(m["auroc"]), fmt(m["tpr_at_1pct_fpr"]), fmt(m["fpr_at_flag"])]
            lines.append(
                f"| {name} | {int((mask & (held.fold >= 0)).sum())} | " + " | ".join(cells) + " |"
            )
        lines.append("")

    everything = np.ones(len(rows), dtype=bool)
    table(
        "Pooled",
        [
            ("all held-out rows", everything),
            ("hard negatives (FPR)", np.isin(files, HARD_NEGATIVE_FILES) & (labels == 0)),
        ],
    )
    table("Per kind", [(k, kinds == k) for k in sorted(set(rows.kinds))])
    table("Per file", [(f, files == f) for f in sorted(set(rows.files))])
    table(
        "Hidden injections by document length (tokens)",
        [
            (f"{f} {name}", (files == f) & (tokens >= low) & (tokens < high))
            for f in HIDDEN_INJECTION_FILES
            for low, high, name in LENGTH_BUCKETS
        ],
    )
    return "\n".join(lines)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
