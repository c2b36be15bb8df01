"""Poisoned twins of benign documents: training data that teaches the shift, not the genre.

The corpus's hidden injections sit in few host genres (BIPIA's emails, tables and code;
WikiText paragraphs). A detector fitted on them learns those genres. Here every benign
genre of the training files hosts payloads of every attack group: a payload (a located
BIPIA/TaskTracker payload, or a direct injection or jailbreak, cut at a sentence) goes at
the start, a sentence boundary in the middle, or the end of a host, in prose or inside a
structured wrapper (code comments, a table row, HTML, a JSON record, key: value tool
output). Each poisoned document keeps its clean twin (same host, same wrapper) and the
payload's character span, so windows are labelled by what they hold.

Which payload group goes into which host genres is fixed by `pairing`, so that a
leave-one-group-out evaluation can hold out a payload group *and* the genres it was put in
(bench/quality.py): its scores then measure unseen payloads in unseen genres. Seeded: the
same corpus rows give the same documents. Nothing of the corpus is stored in the project.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from alknet_firewall.corpus import LabelledRows

WRAPPERS = ("code", "table", "html", "json", "tool")
MAX_HOST_CHARS = 1200
MAX_PAYLOAD_CHARS = 600
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Pairing:
    """Per payload (attack) group, the host genres its payloads are put in: benign origin
    groups and wrapper names."""

    hosts: dict[str, tuple[str, ...]]

    @classmethod
    def rotating(cls, attack_groups: Sequence[str], benign_groups: Sequence[str]) -> Pairing:
        """Attack group k takes benign groups k, k+n, ... and wrapper k (mod n)."""
        n = len(attack_groups)
        hosts = {
            group: (*sorted(benign_groups)[k::n], *WRAPPERS[k % len(WRAPPERS) :: n])
            for k, group in enumerate(attack_groups)
        }
        return cls(hosts)


def poisoned_rows(
    rows: LabelledRows, pairing: Pairing, per_group: int, seed: int = 0
) -> LabelledRows:
    """`per_group` poisoned documents per attack group, each followed by its clean twin.

    Poisoned rows are `indirect_injection` attacks of file `poison_<genre>` with the
    payload group as their origin group; clean twins are benign rows of the same file
    whose group is the host's. `rows.hosts` names the genre of both."""
    rng = random.Random(f"poison:{seed}")
    out = LabelledRows()
    for group, genres in sorted(pairing.hosts.items()):
        payloads = _payloads(rows, group)
        prose = [g for g in genres if g not in WRAPPERS]
        wrappers = [g for g in genres if g in WRAPPERS]
        hosts = [i for i, g in enumerate(rows.groups) if g in prose and rows.labels[i] == 0]
        if not payloads or not hosts:
            continue
        for _ in range(per_group):
            host_index = rng.choice(hosts)
            host = _cut(rows.texts[host_index], MAX_HOST_CHARS)
            wrapper = rng.choice([None, *wrappers])
            genre = wrapper or rows.groups[host_index]
            payload = rng.choice(payloads)
            units = _units(host)
            at = rng.choice((0, len(units) // 2, len(units)))
            poisoned, span = _render(units, wrapper, payload, at)
            clean, _ = _render(units, wrapper, None, at)
            for text, label in ((poisoned, 1), (clean, 0)):
                out.texts.append(text)
                out.labels.append(label)
                out.kinds.append("indirect_injection" if label else "benign_doc")
                out.files.append(f"poison_{genre}")
                out.groups.append(group if label else rows.groups[host_index])
                out.payloads.append(span if label else None)
                out.hosts.append(genre)
    return out


def _payloads(rows: LabelledRows, group: str) -> list[str]:
    """The attack group's payloads: located spans where known, else the attack text cut
    at a sentence boundary."""
    found = []
    for text, label, group_of, span in zip(
        rows.texts, rows.labels, rows.groups, rows.payloads, strict=True
    ):
        if label != 1 or group_of != group or group_of.startswith("poison"):
            continue
        payload = text[span[0] : span[1]] if span else text
        found.append(_cut(payload.strip(), MAX_PAYLOAD_CHARS))
    return [p for p in found if p]


def _cut(text: str, limit: int) -> str:
    """At most `limit` characters, ending at a sentence or line end where there is one."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    ends = [m.start() for m in _SENTENCE_END.finditer(head)]
    return head[: ends[-1]] if ends and ends[-1] > limit // 3 else head


def _units(host: str) -> list[str]:
    """Sentences (prose) or lines (wrapped hosts): the places a payload can go between."""
    parts = [p.strip() for p in _SENTENCE_END.split(host) if p.strip()]
    return parts or [host.strip()]


def _render(
    units: list[str], wrapper: str | None, payload: str | None, at: int
) -> tuple[str, tuple[int, int]]:
    """The host with `payload` (if any) as unit number `at`; returns the text and the
    payload's character span."""
    cells = list(units)
    if payload is not None:
        cells.insert(at, payload)
    render = _RENDERERS[wrapper or "prose"]
    pieces = render(cells)
    text, span, position = "", (0, 0), 0
    for index, piece in enumerate(pieces):
        if payload is not None and index == at:
            shown = _as_rendered(piece, payload)
            inner = piece.find(shown)
            span = (position + inner, position + inner + len(shown))
        text += piece
        position += len(piece)
    return text, span


def _as_rendered(piece: str, payload: str) -> str:
    """The payload as its wrapper wrote it (JSON escapes it, a table cell loses pipes)."""
    escaped = json.dumps(payload, ensure_ascii=False)[1:-1]
    for shown in (payload, escaped, payload.replace("|", "/")):
        if shown in piece:
            return shown
    raise AssertionError("a renderer dropped the payload")


def _prose(cells: list[str]) -> list[str]:
    return [cell + (" " if i < len(cells) - 1 else "") for i, cell in enumerate(cells)]


def _code(cells: list[str]) -> list[str]:
    pieces = [f"# {cell}\n" for cell in cells]
    pieces[0] = "import os\n\n" + pieces[0]
    pieces[-1] += "\ndef main() -> None:\n    print(os.getcwd())\n"
    return pieces


def _table(cells: list[str]) -> list[str]:
    rows = [f"| {i + 1} | {cell.replace('|', '/')} |\n" for i, cell in enumerate(cells)]
    rows[0] = "| # | entry |\n|---|---|\n" + rows[0]
    return rows


def _html(cells: list[str]) -> list[str]:
    pieces = [f"<p>{cell}</p>\n" for cell in cells]
    pieces[0] = "<html><body>\n" + pieces[0]
    pieces[-1] = pieces[-1] + "</body></html>"
    return pieces


def _json(cells: list[str]) -> list[str]:
    pieces = [
        json.dumps({"id": i + 1, "text": cell}, ensure_ascii=False)
        + (",\n" if i < len(cells) - 1 else "\n")
        for i, cell in enumerate(cells)
    ]
    pieces[0] = '{"status": "ok", "records": [\n' + pieces[0]
    pieces[-1] = pieces[-1] + "]}"
    return pieces


def _tool(cells: list[str]) -> list[str]:
    pieces = [f"result_{i + 1}: {cell}\n" for i, cell in enumerate(cells)]
    pieces[0] = "tool: search\nstatus: 200\n" + pieces[0]
    return pieces


_RENDERERS: dict[str, Callable[[list[str]], list[str]]] = {
    "prose": _prose,
    "code": _code,
    "table": _table,
    "html": _html,
    "json": _json,
    "tool": _tool,
}
