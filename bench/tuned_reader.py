"""Does training the reader move the held-out tail? Fine-tune the model's upper layers.

Every codebook recipe measured so far reads a frozen model and sits at 0.84-0.87 held-out
AUROC (bench/EXPLORE.md); the lead left is to train the reader itself. This pilot does the
cheapest version of that on a CPU: the framed windows of bench/quality.py's sample are run
once through the frozen lower layers (their states cached on disk), and per fold of the
same leave-one-group-out protocol the layers above them (to `--top-layer`) are fine-tuned
with a small head, or only the head is fitted (`--head-only`, the control).

The objective is the document's, as the screener scores it: a document's logit is the
maximum over its windows (for a poisoned document with a known payload, over the windows
that hold it), so a benign document's worst window is what the loss pushes down. The flag
threshold is the benign (1 - flag_fpr) quantile on a calibration share of the training
documents that the fit never saw. The last line printed is JSON with the pooled figures.
The runs recorded in bench/EXPLORE.md (tenth and eleventh stops; the tenth stop's `--mine`,
a second epoch on each benign document's highest-scoring windows, was deleted once a plain
second epoch did as badly):

    .venv/bin/python bench/tuned_reader.py --per-file 100 --poison-per-group 75
    .venv/bin/python bench/tuned_reader.py --per-file 100 --poison-per-group 75 --head-only
    .venv/bin/python bench/tuned_reader.py --per-file 100 --poison-per-group 75 --bf16
    .venv/bin/python bench/tuned_reader.py --per-file 100 --poison-per-group 75 --bf16 --energy-margin 2
    .venv/bin/python bench/tuned_reader.py --per-file 100 --poison-per-group 75 --bf16 --epochs 2
    .venv/bin/python bench/tuned_reader.py --per-file 400 --poison-per-group 300 --bf16 \
        --lower-dtype bfloat16 --train-docs 20000
    .venv/bin/python bench/tuned_reader.py --per-file 400 --poison-per-group 300 --bf16 \
        --lower-dtype bfloat16
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from quality import (
    HARD_NEGATIVE_KIND,
    HIDDEN_KIND,
    add_sample_arguments,
    leave_groups_out,
    sample_rows,
    subset_metrics,
)
from tqdm import tqdm
from transformers import AutoConfig, AutoModel

from alknet_firewall.config import load_settings
from alknet_firewall.corpus import LabelledRows
from alknet_firewall.model import TransformersDetector
from alknet_firewall.model_files import resolve_model_folder
from alknet_firewall.payloads import window_role
from alknet_firewall.windows import Window, iter_batches, tokenize_windows


@dataclass(frozen=True)
class LowerStates:
    """The frozen layers' output: the frame prefix's states once, then every window's
    (window tokens + frame suffix) states, concatenated, with offsets."""

    prefix: torch.Tensor  # (prefix tokens, hidden) float32
    states: np.ndarray  # (all window tokens, hidden) float16
    offsets: np.ndarray  # (windows + 1,)
    text_tokens: np.ndarray  # (windows,) window tokens without the suffix


def load_model(folder: Path, layers: int) -> torch.nn.Module:
    # Weights of the layers left out are "unused"; transformers would list every one.
    logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
    config = AutoConfig.from_pretrained(folder)
    config.num_hidden_layers = layers
    model = AutoModel.from_pretrained(
        folder, config=config, dtype=torch.float32, attn_implementation="sdpa"
    )
    model.norm = torch.nn.Identity()  # the residual stream at the last layer, as model.py
    return model.float()


def lower_states(detector: TransformersDetector, windows: list[Window], cache: Path) -> LowerStates:
    """Run every window through the detector's (frozen) layers once, read inside its frame
    behind the cached prefix as the screener reads it; cached on disk."""
    if cache.exists():
        stored = np.load(cache)
        return LowerStates(
            torch.from_numpy(stored["prefix"]),
            stored["states"],
            stored["offsets"],
            stored["text_tokens"],
        )
    assert detector.frame is not None
    frame = detector.frame
    with torch.inference_mode():
        # the upper layers attend to the prefix: they need its states, not only its keys
        prefix_ids = torch.tensor([frame.prefix])
        prefix_state = detector.model(input_ids=prefix_ids).last_hidden_state[0].float()
        lengths = np.array([len(w.token_ids) + len(frame.suffix) for w in windows])
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        states = np.zeros((int(offsets[-1]), prefix_state.shape[1]), dtype=np.float16)
        bar = tqdm(total=int(offsets[-1]), unit="tok", desc=f"layers 1-{max(detector.layers)}")
        for batch in iter_batches(windows, detector.tokenizer, 4096, suffix=frame.suffix):
            inputs = detector.framed_inputs(
                torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
            )
            hidden = detector.model(**inputs).last_hidden_state.float().numpy()
            for row, index in enumerate(batch.windows):
                n = int(lengths[index])
                states[offsets[index] : offsets[index] + n] = hidden[row, :n]
            bar.update(batch.real_tokens)
        bar.close()
    text_tokens = np.array([len(w.token_ids) for w in windows])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache, prefix=prefix_state.numpy(), states=states, offsets=offsets, text_tokens=text_tokens
    )
    return LowerStates(prefix_state, states, offsets, text_tokens)


class UpperReader(torch.nn.Module):
    """The layers above the frozen ones, and a head over the frame's last token and the
    window tokens' mean at the top layer."""

    def __init__(self, model: torch.nn.Module, frozen: int) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(list(model.layers)[frozen:])
        self.rotary = model.rotary_emb
        hidden = int(model.config.hidden_size)
        self.norm = torch.nn.LayerNorm(2 * hidden)
        self.head = torch.nn.Linear(2 * hidden, 1)

    def forward(
        self, prefix: torch.Tensor, windows: list[torch.Tensor], text_tokens: list[int]
    ) -> torch.Tensor:
        """One logit per window: `windows` holds each one's lower states (tokens, hidden)."""
        n_prefix, hidden = prefix.shape
        width = n_prefix + max(w.shape[0] for w in windows)
        rows = len(windows)
        x = prefix.new_zeros(rows, width, hidden)
        x[:, :n_prefix] = prefix
        lengths = torch.tensor([n_prefix + w.shape[0] for w in windows])
        for row, states in enumerate(windows):
            x[row, n_prefix : n_prefix + states.shape[0]] = states
        positions = torch.arange(width)[None, :].expand(rows, -1)
        valid = positions < lengths[:, None]
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        mask = (causal[None, :, :] & valid[:, None, :])[:, None]  # (rows, 1, query, key)
        cos_sin = self.rotary(x, positions)
        for layer in self.layers:
            x = layer(x, attention_mask=mask, position_ids=positions, position_embeddings=cos_sin)
        last = x[torch.arange(rows), lengths - 1]
        text = torch.zeros(rows, width, dtype=torch.bool)
        for row, n in enumerate(text_tokens):
            text[row, n_prefix : n_prefix + n] = True
        mean = (x * text[:, :, None]).sum(dim=1) / text.sum(dim=1, keepdim=True)
        return self.head(self.norm(torch.cat([last, mean], dim=1)))[:, 0]


@dataclass(frozen=True)
class Plan:
    """Windows per document and which of them train its document's logit."""

    window_doc: np.ndarray
    by_doc: list[list[int]]
    training: list[list[int]]


def make_plan(rows: LabelledRows, windows: list[Window]) -> Plan:
    by_doc: list[list[int]] = [[] for _ in range(len(rows))]
    for index, window in enumerate(windows):
        by_doc[window.doc].append(index)
    training: list[list[int]] = []
    for doc, indices in enumerate(by_doc):
        payload = rows.payloads[doc] if rows.payloads else None
        if payload is None or not rows.labels[doc]:
            training.append(indices)
            continue
        spans = [(windows[i].char_start, windows[i].char_end) for i in indices]
        holding = [
            i for i, span in zip(indices, spans, strict=True) if window_role(span, payload) == 1
        ]
        training.append(holding or indices)
    return Plan(np.array([w.doc for w in windows]), by_doc, training)


def window_tensors(lower: LowerStates, indices: list[int]) -> list[torch.Tensor]:
    return [
        torch.from_numpy(lower.states[lower.offsets[i] : lower.offsets[i + 1]].astype(np.float32))
        for i in indices
    ]


def autocast(bf16: bool) -> torch.autocast:
    """bf16 matmuls for the trained layers when asked (twice the speed of fp32 on a CPU
    with AMX); the stored lower states and the optimizer's weights stay fp32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def score_windows(
    reader: UpperReader, lower: LowerStates, indices: np.ndarray, batch_tokens: int, bf16: bool
) -> np.ndarray:
    """Logit of each listed window, batched by length (no gradients)."""
    order = indices[np.argsort(-(lower.offsets[indices + 1] - lower.offsets[indices]))]
    logits = np.zeros(len(lower.text_tokens), dtype=np.float64)
    reader.eval()
    with torch.inference_mode():
        start = 0
        while start < order.size:
            width = int(lower.offsets[order[start] + 1] - lower.offsets[order[start]]) + 40
            count = max(1, batch_tokens // width)
            chosen = [int(i) for i in order[start : start + count]]
            with autocast(bf16):
                out = reader(
                    lower.prefix,
                    window_tensors(lower, chosen),
                    [int(lower.text_tokens[i]) for i in chosen],
                )
            logits[chosen] = out.float().numpy()
            start += count
    return logits


def fit_reader(
    model_folder: Path,
    frozen: int,
    top: int,
    lower: LowerStates,
    plan: Plan,
    labels: np.ndarray,
    fit_docs: np.ndarray,
    args: argparse.Namespace,
    seed: int,
) -> UpperReader:
    torch.manual_seed(seed)
    reader = UpperReader(load_model(model_folder, top), frozen)
    rng = np.random.default_rng(seed)
    benign, attack = fit_docs[labels[fit_docs] == 0], fit_docs[labels[fit_docs] == 1]
    half = args.train_docs // 2
    docs = np.concatenate(
        [
            rng.choice(benign, min(half, benign.size), replace=False),
            rng.choice(attack, min(half, attack.size), replace=False),
        ]
    )
    # each document contributes at most `windows_per_doc` of its training windows
    chosen = {
        int(d): [int(i) for i in rng.permutation(plan.training[d])[: args.windows_per_doc]]
        for d in docs
    }
    layer_params = [p for layer in reader.layers for p in layer.parameters()]
    head_params = list(reader.norm.parameters()) + list(reader.head.parameters())
    for p in layer_params:
        p.requires_grad_(not args.head_only)
    groups = [{"params": head_params, "lr": args.head_lr}]
    if not args.head_only:
        groups.append({"params": layer_params, "lr": args.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    steps = args.epochs * math.ceil(docs.size / args.batch_docs)
    base = [g["lr"] for g in optimizer.param_groups]
    pos_weight = torch.tensor((labels[docs] == 0).sum() / max(1, (labels[docs] == 1).sum()))
    step = 0
    bar = tqdm(total=steps, desc="fine-tune", unit="step")
    reader.train()
    for _epoch in range(args.epochs):
        order = rng.permutation(docs)
        for first in range(0, order.size, args.batch_docs):
            batch = [int(d) for d in order[first : first + args.batch_docs]]
            indices = [i for d in batch for i in chosen[d]]
            owner = torch.tensor([n for n, d in enumerate(batch) for _ in chosen[d]])
            with autocast(args.bf16):
                logits = reader(
                    lower.prefix,
                    window_tensors(lower, indices),
                    [int(lower.text_tokens[i]) for i in indices],
                ).float()
            doc_logit = torch.full((len(batch),), -1e4).scatter_reduce(
                0, owner, logits, reduce="amax"
            )
            target = torch.tensor([float(labels[d]) for d in batch])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                doc_logit, target, pos_weight=pos_weight
            )
            if args.energy_margin:
                # squared hinges (the energy-based OOD objective's shape): a benign logit above
                # -margin or an attack's below +margin costs quadratically, so the benign
                # documents scored highest weigh far more than in cross-entropy's linear tail
                benign_excess = torch.relu(doc_logit + args.energy_margin) * (1 - target)
                attack_short = torch.relu(args.energy_margin - doc_logit) * target
                loss = loss + args.energy_weight * (benign_excess**2 + attack_short**2).mean()
            # linear warm-up over the first tenth, then linear decay to zero
            scale = min(
                (step + 1) / max(1, steps // 10), (steps - step) / max(1, steps - steps // 10)
            )
            for group, lr in zip(optimizer.param_groups, base, strict=True):
                group["lr"] = lr * max(0.0, scale)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            optimizer.step()
            step += 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
    bar.close()
    return reader


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sample_arguments(parser)
    parser.add_argument("--frozen-layers", type=int, default=12)
    parser.add_argument("--top-layer", type=int, default=16)
    parser.add_argument(
        "--lower-dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="the frozen layers' dtype (their states are stored as fp16 either way)",
    )
    parser.add_argument("--head-only", action="store_true", help="fit the head alone")
    parser.add_argument("--train-docs", type=int, default=1500, help="documents per fold")
    parser.add_argument("--windows-per-doc", type=int, default=2)
    parser.add_argument("--batch-docs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--energy-margin",
        type=float,
        default=0.0,
        help="add squared hinges pushing benign logits below -M and attacks above +M (0: off)",
    )
    parser.add_argument("--energy-weight", type=float, default=0.1)
    parser.add_argument(
        "--bf16", action="store_true", help="train and score the upper layers in bf16 autocast"
    )
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--calibration", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--save", default="", help="also save the held-out scores here (.npz)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = load_settings(args.config)
    started = time.time()
    rows = sample_rows(args, settings)
    folder, model_id = resolve_model_folder(settings.model)
    detector = TransformersDetector(
        folder, [args.frozen_layers], model_id=model_id, dtype=args.lower_dtype, framed=True
    )
    size, stride = settings.windows.size, settings.windows.stride
    windows = tokenize_windows(detector.tokenizer, rows.texts, size, stride).windows
    key = hashlib.sha256(
        f"{detector.weight_digest}|{detector.dtype}|{args.frozen_layers}|{size}|{stride}|"
        f"{rows.digest()}".encode()
    ).hexdigest()[:16]
    cache = Path(settings.model.cache_dir) / "tuned-reader" / f"lower-{key}.npz"
    lower = lower_states(detector, windows, cache)
    del detector
    print(f"lower states ready in {time.time() - started:.0f} s", file=sys.stderr)
    plan = make_plan(rows, windows)
    labels = np.array(rows.labels)
    files = np.array(rows.files)

    def scorer(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, float]:
        rng = np.random.default_rng(args.seed)
        calibration = np.zeros(len(rows), dtype=bool)
        for name in np.unique(files[train]):
            in_file = train[files[train] == name]
            calibration[
                rng.choice(in_file, round(args.calibration * in_file.size), replace=False)
            ] = True
        fit_docs = train[~calibration[train]]
        reader = fit_reader(
            folder,
            args.frozen_layers,
            args.top_layer,
            lower,
            plan,
            labels,
            fit_docs,
            args,
            args.seed,
        )
        scored = np.concatenate([test, train[calibration[train]]])
        window_ids = np.array([i for d in scored for i in plan.by_doc[d]], dtype=np.int64)
        logits = score_windows(reader, lower, window_ids, 8192, args.bf16)
        doc_scores = np.full(len(rows), -np.inf)
        np.maximum.at(doc_scores, plan.window_doc[window_ids], logits[window_ids])
        calib_benign = doc_scores[train[calibration[train] & (labels[train] == 0)]]
        flag = float(np.quantile(calib_benign, 1.0 - settings.codebook.flag_fpr))
        return doc_scores[test], flag

    held = leave_groups_out(rows, {"tuned": scorer})
    if args.save:
        np.savez(args.save, scores=held.scores["tuned"], flag=held.flag["tuned"], fold=held.fold)
    kinds = np.array(rows.kinds)
    doc_tokens = np.zeros(len(rows), dtype=np.int64)
    np.add.at(doc_tokens, plan.window_doc, lower.text_tokens)
    subsets = {
        "all": np.ones(len(rows), dtype=bool),
        "hidden": kinds == HIDDEN_KIND,
        "hard": (kinds == HARD_NEGATIVE_KIND) & (labels == 0),
        "short": doc_tokens < 16,
    }
    figures = {name: subset_metrics(held, labels, mask)["tuned"] for name, mask in subsets.items()}
    summary = {
        "auroc": figures["all"]["auroc"],
        "tpr_at_1pct_fpr": figures["all"]["tpr_at_1pct_fpr"],
        "hidden_auroc": figures["hidden"]["auroc"],
        "hidden_tpr_at_1pct_fpr": figures["hidden"]["tpr_at_1pct_fpr"],
        "hard_negative_fpr_at_flag": figures["hard"]["fpr_at_flag"],
        "short_benign_fpr_at_flag": figures["short"]["fpr_at_flag"],
        "short_attack_tpr_at_flag": figures["short"]["tpr_at_flag"],
        "all_fpr_at_flag": figures["all"]["fpr_at_flag"],
        "all_tpr_at_flag": figures["all"]["tpr_at_flag"],
        "head_only": args.head_only,
        "epochs": args.epochs,
        "bf16": args.bf16,
        "lower_dtype": args.lower_dtype,
        "energy_margin": args.energy_margin,
        "energy_weight": args.energy_weight,
        "frozen_layers": args.frozen_layers,
        "top_layer": args.top_layer,
        "seconds": round(time.time() - started),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
