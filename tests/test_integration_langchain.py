"""The LangChain transformer in an ingestion run: a document loader, the transformer, an
in-memory vector store with LangChain's deterministic fake embeddings, then a search."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from langchain_core.document_loaders import BaseLoader
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore

from alknet_firewall.integrations.langchain import ScreeningTransformer
from tests.integration_helpers import ATTACK, BENIGN, SUSPECT, RuleScreener


class ListLoader(BaseLoader):
    """A loader over texts in memory, standing in for a file or web loader."""

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts

    def lazy_load(self) -> Iterator[Document]:
        for source, text in self.texts.items():
            yield Document(page_content=text, metadata={"source": source}, id=source)


CORPUS = {
    "recipe": BENIGN,
    "poisoned": f"Shipping takes three days. {ATTACK}",
    "odd": SUSPECT,
    "empty": "",
    "hours": "The library opens at nine and closes at six on weekdays.",
}


def test_ingestion_drops_blocked_marks_flagged_and_indexes_the_rest() -> None:
    screener = RuleScreener()
    docs = ScreeningTransformer(screener).transform_documents(ListLoader(CORPUS).load())
    assert [d.id for d in docs] == ["recipe", "odd", "hours"]  # poisoned, empty dropped
    assert screener.batches == [list(CORPUS.values())]  # one batch for the whole list

    by_id = {d.id: d.metadata for d in docs}
    assert by_id["recipe"] == {
        "source": "recipe",
        "alknet_decision": "allow",
        "alknet_score": 0.01,
        "alknet_alarms": "",
        "alknet_codebook": "rules-1",
    }
    assert by_id["odd"]["alknet_decision"] == "flag"
    assert by_id["odd"]["alknet_quarantine"] is True
    assert by_id["odd"]["alknet_alarms"] == "attack 0.9930 [chars 2-9]"

    store = InMemoryVectorStore(embedding=DeterministicFakeEmbedding(size=16))
    store.add_documents(list(docs))
    found = store.similarity_search("anything", k=10)
    assert {d.id for d in found} == {"recipe", "odd", "hours"}
    clean = store.similarity_search(
        "anything", k=10, filter=lambda d: not d.metadata.get("alknet_quarantine")
    )
    assert {d.id for d in clean} == {"recipe", "hours"}


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        ({"on_flag": "drop"}, ["recipe", "hours"]),
        ({"on_flag": "keep"}, ["recipe", "odd", "hours"]),
        ({"on_block": "mark", "on_error": "keep"}, ["recipe", "poisoned", "odd", "empty", "hours"]),
    ],
)
def test_the_policy_decides_what_is_kept(policy: dict[str, str], kept: list[str]) -> None:
    docs = ScreeningTransformer(RuleScreener(), **policy).transform_documents(
        ListLoader(CORPUS).load()
    )
    assert [d.id for d in docs] == kept
    marked = {d.id for d in docs if d.metadata.get("alknet_quarantine")}
    assert ("odd" in marked) == (policy.get("on_flag", "mark") == "mark")
    assert ("poisoned" in marked) == (policy.get("on_block") == "mark")
    if "empty" in kept:
        empty = next(d for d in docs if d.id == "empty")
        assert empty.metadata["alknet_decision"] == "error"
        assert empty.metadata["alknet_error"] == "text is empty"


def test_inputs_are_untouched_and_a_rescreen_replaces_the_old_verdict() -> None:
    original = Document(page_content=SUSPECT, metadata={"source": "a"})
    (marked,) = ScreeningTransformer(RuleScreener()).transform_documents([original])
    assert original.metadata == {"source": "a"}
    assert marked.metadata["alknet_quarantine"] is True
    (kept,) = ScreeningTransformer(RuleScreener(), on_flag="keep").transform_documents([marked])
    assert "alknet_quarantine" not in kept.metadata


def test_async_transform_and_a_bad_policy_word() -> None:
    screener = RuleScreener()
    docs = asyncio.run(
        ScreeningTransformer(screener).atransform_documents(list(ListLoader(CORPUS).load()))
    )
    assert len(docs) == 3 and len(screener.batches) == 1
    with pytest.raises(ValueError, match="on_flag must be one of keep, mark, drop; got 'quar"):
        ScreeningTransformer(on_flag="quarantine")
