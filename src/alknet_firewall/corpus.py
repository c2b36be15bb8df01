"""The labelled corpus: rows of {"text", "label", "kind"} JSONL, grouped by file and origin.

Used to fit and evaluate codebooks. Rows are sampled per file with a fixed seed, so a
build is reproducible, and split by file or origin group, never by row (templated files
leak across a row split).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from alknet_firewall.errors import CorpusError
from alknet_firewall.payloads import Span, locate_payloads

ATTACK_KINDS = ("direct_injection", "indirect_injection", "jailbreak")
BENIGN_KINDS = ("benign_doc", "benign_chat", "hard_negative")

# From the corpus README: files whose licence forbids training the shipped codebook.
EVALUATION_ONLY = frozenset(
    {"selfinstruct_t0_docs", "instructionwild", "alpaca_eval", "code_alpaca"}
)

# Origin groups (corpus README): files that share templates or sources stay together.
ORIGIN_GROUPS = {
    "bipia": "bipia",
    "synth_indirect_tasktracker_x_wikitext": "tasktracker",
    "tasktracker": "tasktracker",
    "cyberseceval2_prompt_injection": "cyberseceval2",
    "jailbreakbench_artifacts": "jailbreakbench",
    "jailbreak_llms_inthewild": "inthewild",
    "gptfuzz_templates": "inthewild",
    "notinject": "injecguard",
    "wildguard_benign": "injecguard",
    "wikitext2_paragraphs": "wikitext",
    "tldr_pages": "tldr",
    "owasp_cheatsheets": "owasp",
    "based_cooking_recipes": "cooking",
    "awesome_chatgpt_prompts": "prompts",
    "gpteacher_roleplay": "gpteacher",
    "gsm8k": "gsm8k",
    "chitchat_messages": "chitchat",
    "selfinstruct_seed_and_user": "alpaca",
    "selfinstruct_t0_docs": "t0",
    "instructionwild": "alpaca",
    "alpaca_eval": "alpaca",
    "code_alpaca": "alpaca",
}


@dataclass
class LabelledRows:
    """Parallel lists of texts and their labels, kinds, files and origin groups."""

    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    # Character span of the injected payload, where the row's file holds its clean twin.
    payloads: list[Span | None] = field(default_factory=list)
    # Host genre of a synthetic poisoned row or clean twin (poison.py); "" for corpus rows.
    hosts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def digest(self) -> str:
        """sha256 over the texts and labels, in order: names the training data."""
        digest = hashlib.sha256()
        for text, label, kind in zip(self.texts, self.labels, self.kinds, strict=True):
            digest.update(f"{label}\t{kind}\t".encode())
            digest.update(text.encode("utf-8", errors="surrogatepass"))
            digest.update(b"\0")
        return "sha256:" + digest.hexdigest()

    def subset(self, keep: list[int]) -> LabelledRows:
        return LabelledRows(
            [self.texts[i] for i in keep],
            [self.labels[i] for i in keep],
            [self.kinds[i] for i in keep],
            [self.files[i] for i in keep],
            [self.groups[i] for i in keep],
            [self.payloads[i] for i in keep],
            [self.hosts[i] for i in keep],
        )

    def extend(self, other: LabelledRows) -> LabelledRows:
        """These rows followed by `other`'s."""
        return LabelledRows(
            self.texts + other.texts,
            self.labels + other.labels,
            self.kinds + other.kinds,
            self.files + other.files,
            self.groups + other.groups,
            self.payloads + other.payloads,
            self.hosts + other.hosts,
        )


def corpus_files(corpus: Path, *, training_only: bool) -> list[Path]:
    """The corpus's JSONL files, sorted; with training_only, those allowed for training."""
    if not corpus.is_dir():
        raise CorpusError(f"corpus folder not found: {corpus}")
    files = sorted(corpus.glob("*.jsonl"))
    if training_only:
        files = [path for path in files if path.stem not in EVALUATION_ONLY]
    if not files:
        raise CorpusError(f"no *.jsonl files in {corpus}")
    return files


def load_rows(files: list[Path], *, per_file: int | None = None, seed: int = 0) -> LabelledRows:
    """Read labelled rows, at most `per_file` from each file (a seeded sample). Attack rows
    whose clean twin is in the same file (sampled or not) get their payload's span."""
    rows = LabelledRows()
    for path in files:
        records = [_parse(path, number, line) for number, line in _lines(path)]
        clean = [text for text, label, _ in records if label == 0]
        if per_file is not None and len(records) > per_file:
            records = random.Random(f"{seed}:{path.stem}").sample(records, per_file)
        attacks = [text for text, label, _ in records if label == 1]
        located = iter(locate_payloads(attacks, clean) if clean else [None] * len(attacks))
        for text, label, kind in records:
            rows.payloads.append(next(located) if label == 1 else None)
            rows.texts.append(text)
            rows.labels.append(label)
            rows.kinds.append(kind)
            rows.files.append(path.stem)
            rows.groups.append(ORIGIN_GROUPS.get(path.stem, path.stem))
            rows.hosts.append("")
    return rows


def _lines(path: Path) -> list[tuple[int, str]]:
    with path.open(encoding="utf-8") as handle:
        return [(number, line) for number, line in enumerate(handle, 1) if line.strip()]


def _parse(path: Path, number: int, line: str) -> tuple[str, int, str]:
    try:
        row = json.loads(line)
        text, label, kind = row["text"], int(row["label"]), str(row["kind"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CorpusError(f"{path}:{number}: expected text, label and kind ({exc})") from None
    if not isinstance(text, str) or not text.strip() or label not in (0, 1):
        raise CorpusError(f"{path}:{number}: text must be non-empty and label 0 or 1")
    return text, label, kind
