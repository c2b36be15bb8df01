"""Poisoned twins: the payload sits where its span says, the clean twin is the same host
without it, every payload group goes only into its paired genres, and a seed fixes it all."""

from __future__ import annotations

import json

import pytest

from alknet_firewall.build import pairing_for, with_poisoned
from alknet_firewall.corpus import LabelledRows
from alknet_firewall.poison import WRAPPERS, Pairing, poisoned_rows
from tests.tiny import ATTACK_SENTENCES, BENIGN_SENTENCES, INJECTION

HOST_GROUPS = ("recipes", "reports", "travel")


def corpus() -> LabelledRows:
    rows = LabelledRows()

    def add(text: str, label: int, group: str, payload: tuple[int, int] | None = None) -> None:
        rows.texts.append(text)
        rows.labels.append(label)
        rows.kinds.append("direct_injection" if label else "benign_doc")
        rows.files.append(group)
        rows.groups.append(group)
        rows.payloads.append(payload)
        rows.hosts.append("")

    for index, group in enumerate(HOST_GROUPS):
        for offset in range(4):
            add(" ".join(BENIGN_SENTENCES[index + offset : index + offset + 3]), 0, group)
    for sentence in ATTACK_SENTENCES["direct_injection"]:
        add(sentence, 1, "direct")
    hidden = f"{BENIGN_SENTENCES[0]} {INJECTION} {BENIGN_SENTENCES[1]}"
    start = hidden.index(INJECTION)
    add(hidden, 1, "hidden", (start, start + len(INJECTION)))
    return rows


@pytest.fixture(scope="module")
def synthetic() -> LabelledRows:
    rows = corpus()
    return poisoned_rows(rows, pairing_for(rows), per_group=40, seed=7)


def test_pairing_spreads_benign_groups_and_wrappers_over_attack_groups() -> None:
    pairing = Pairing.rotating(["direct", "hidden"], list(HOST_GROUPS))
    assert pairing.hosts == {
        "direct": ("recipes", "travel", "code", "html", "tool"),
        "hidden": ("reports", "table", "json"),
    }
    assert pairing_for(corpus()) == pairing


def test_payload_span_holds_the_payload_and_the_twin_lacks_it(synthetic: LabelledRows) -> None:
    assert len(synthetic) == 2 * 2 * 40
    payloads = {*ATTACK_SENTENCES["direct_injection"], INJECTION}
    for index in range(0, len(synthetic), 2):
        poisoned, clean = synthetic.texts[index], synthetic.texts[index + 1]
        span = synthetic.payloads[index]
        assert span is not None and synthetic.payloads[index + 1] is None
        assert (synthetic.labels[index], synthetic.labels[index + 1]) == (1, 0)
        shown = poisoned[span[0] : span[1]]
        # JSON escapes what it holds; every wrapper keeps the payload's words
        assert any(shown in (p, json.dumps(p)[1:-1]) for p in payloads), shown
        assert shown not in clean
        assert synthetic.hosts[index] == synthetic.hosts[index + 1]
        assert synthetic.files[index] == f"poison_{synthetic.hosts[index]}"


def test_payloads_only_go_into_their_paired_genres(synthetic: LabelledRows) -> None:
    pairing = pairing_for(corpus())
    wrappers_seen = set()
    for label, group, host in zip(synthetic.labels, synthetic.groups, synthetic.hosts, strict=True):
        if label:
            assert host in pairing.hosts[group]
        if label and host in WRAPPERS:
            wrappers_seen.add(host)
    assert wrappers_seen == set(WRAPPERS)  # 40 documents per group reach every wrapper


def test_same_seed_same_documents() -> None:
    rows = corpus()
    first = poisoned_rows(rows, pairing_for(rows), per_group=10, seed=1)
    again = poisoned_rows(rows, pairing_for(rows), per_group=10, seed=1)
    other = poisoned_rows(rows, pairing_for(rows), per_group=10, seed=2)
    assert first.texts == again.texts and first.payloads == again.payloads
    assert first.texts != other.texts


def test_with_poisoned_keeps_each_synthetic_file_in_one_block() -> None:
    rows = corpus()
    combined = with_poisoned(rows, per_group=20, seed=0)
    assert combined.texts[: len(rows)] == rows.texts
    files = combined.files[len(rows) :]
    assert files == sorted(files)
    assert len(combined.hosts) == len(combined)
