"""Queued mode of the ingestion hooks: the same LangChain and LlamaIndex runs with a
`QueueScreener` (real Redis, a real worker process on the tiny model) give the result
they give in process with the same model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document as LCDocument
from llama_index.core.schema import TextNode

from alknet_firewall.config import load_settings
from alknet_firewall.firewall import Firewall
from alknet_firewall.integrations.langchain import ScreeningTransformer
from alknet_firewall.integrations.llamaindex import ScreeningTransform
from alknet_firewall_producer.screener import QueueScreener, QueueTimeout
from tests.queue_helpers import Namespace, namespace, worker_process
from tests.tiny import ATTACK_SENTENCES, BENIGN_SENTENCES, INJECTION

pytestmark = pytest.mark.redis

TEXTS = [
    *BENIGN_SENTENCES[:6],
    *(group[0] for group in ATTACK_SENTENCES.values()),
    f"{BENIGN_SENTENCES[7]} {INJECTION} {BENIGN_SENTENCES[8]}",
    "",  # cannot be screened: an error verdict on both paths
]


@pytest.fixture(scope="module")
def in_process(tiny_env: dict[str, str]) -> Firewall:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in tiny_env.items():
            mp.setenv(key, value)
        return Firewall.from_settings(load_settings())


@pytest.fixture
def ns(tiny_env: dict[str, str]) -> Iterator[Namespace]:
    with namespace(**tiny_env) as ns:
        yield ns


def summary(metadata: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(m["i"], m["alknet_decision"], m.get("alknet_quarantine")) for m in metadata]


def test_queued_mode_gives_the_in_process_result(
    ns: Namespace, in_process: Firewall, tmp_path: Path
) -> None:
    docs = [LCDocument(page_content=t, metadata={"i": i}) for i, t in enumerate(TEXTS)]
    nodes = [TextNode(text=t, metadata={"i": i}) for i, t in enumerate(TEXTS)]
    queued = QueueScreener(ns.settings(), job_prefix="rag", timeout_s=120)
    with worker_process(ns, tmp_path / "worker.log", fake=False):
        lc_queued = ScreeningTransformer(queued).transform_documents(docs)
        li_queued = ScreeningTransform(queued)([n.model_copy(deep=True) for n in nodes])
    assert len(queued.jobs) == 2  # one job per batch, not per document
    lc_local = ScreeningTransformer(in_process).transform_documents(docs)
    li_local = ScreeningTransform(in_process)([n.model_copy(deep=True) for n in nodes])

    local = summary([d.metadata for d in lc_local])
    assert summary([d.metadata for d in lc_queued]) == local
    assert summary([n.metadata for n in li_queued]) == summary([n.metadata for n in li_local])
    assert len(TEXTS) - 1 not in [row[0] for row in local]  # the empty text was dropped
    assert 0 < len(local) < len(TEXTS) - 1  # and some blocked: both outcomes are compared
    for remote, here in zip(lc_queued, lc_local, strict=True):
        # one rounding step apart at most: batch composition differs in the worker
        assert remote.metadata["alknet_score"] == pytest.approx(
            here.metadata["alknet_score"], abs=1.01e-4
        )
        assert remote.metadata["alknet_codebook"] == here.metadata["alknet_codebook"]


def test_no_worker_means_a_timeout_that_names_the_job(ns: Namespace) -> None:
    queued = QueueScreener(ns.settings(), timeout_s=1, poll_s=0.05)
    with pytest.raises(QueueTimeout, match=r"job screen-\w+: 0 of its documents"):
        queued.screen_batch(["a text no worker will read"])
