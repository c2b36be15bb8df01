"""The LlamaIndex transformation in `IngestionPipeline.run`: split, screen, embed (with
LlamaIndex's MockEmbedding), then index and retrieve. No network: the splitter counts
words instead of loading a tokenizer."""

from __future__ import annotations

import asyncio

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode, MetadataMode

from alknet_firewall.integrations.llamaindex import ScreeningTransform
from tests.integration_helpers import ATTACK, BENIGN, SUSPECT, RuleScreener

DOCUMENTS = {
    "recipe": BENIGN,
    "poisoned": f"Shipping takes three days. {ATTACK}",
    "odd": SUSPECT,
    "hours": "The library opens at nine and closes at six on weekdays.",
}


def documents() -> list[Document]:
    return [Document(text=t, metadata={"source": s}) for s, t in DOCUMENTS.items()]


def pipeline(screen: ScreeningTransform) -> IngestionPipeline:
    splitter = SentenceSplitter(chunk_size=64, chunk_overlap=0, tokenizer=str.split)
    return IngestionPipeline(transformations=[splitter, screen, MockEmbedding(embed_dim=8)])


def sources(nodes: list[BaseNode]) -> list[str]:
    return [str(node.metadata["source"]) for node in nodes]


def test_a_pipeline_run_drops_blocked_marks_flagged_in_one_batch() -> None:
    screener = RuleScreener()
    nodes = pipeline(ScreeningTransform(screener)).run(documents=documents())
    assert sources(nodes) == ["recipe", "odd", "hours"]
    assert screener.batches == [list(DOCUMENTS.values())]  # one call for every chunk

    odd = nodes[1]
    assert odd.metadata["alknet_decision"] == "flag"
    assert odd.metadata["alknet_quarantine"] is True
    assert all(node.embedding is not None for node in nodes)  # the pipeline went on

    # The verdict is stored, but neither embedded nor shown to an LLM.
    for mode in (MetadataMode.EMBED, MetadataMode.LLM):
        text = odd.get_content(metadata_mode=mode)
        assert "source: odd" in text and "alknet" not in text

    index = VectorStoreIndex(nodes, embed_model=MockEmbedding(embed_dim=8))
    retrieved = index.as_retriever(similarity_top_k=10).retrieve("anything")
    assert sorted(str(r.node.metadata["source"]) for r in retrieved) == ["hours", "odd", "recipe"]


def test_the_source_documents_are_not_marked() -> None:
    docs = documents()
    pipeline(ScreeningTransform(RuleScreener(), on_flag="keep")).run(documents=docs)
    for doc in docs:
        assert not any("alknet" in key for key in doc.metadata)
        assert not any("alknet" in key for key in doc.excluded_embed_metadata_keys)


def test_the_policy_fields_decide_what_is_kept() -> None:
    keep_all = ScreeningTransform(RuleScreener(), on_flag="keep", on_block="mark")
    nodes = pipeline(keep_all).run(documents=documents())
    assert sources(nodes) == list(DOCUMENTS)
    assert [bool(n.metadata.get("alknet_quarantine")) for n in nodes] == [
        False,
        True,
        False,
        False,
    ]
    strict = ScreeningTransform(RuleScreener(), on_flag="drop")
    assert sources(pipeline(strict).run(documents=documents())) == ["recipe", "hours"]


def test_the_pipeline_cache_serialises_the_transform_without_the_screener() -> None:
    screener = RuleScreener()
    run = pipeline(ScreeningTransform(screener))
    first = run.run(documents=documents())
    again = run.run(documents=documents())  # same nodes, same policy: from the cache
    assert sources(again) == sources(first)
    assert len(screener.batches) == 1
    assert "_screener" not in ScreeningTransform(screener).to_dict()


def test_async_pipeline_run() -> None:
    screener = RuleScreener()
    nodes = asyncio.run(pipeline(ScreeningTransform(screener)).arun(documents=documents()))
    assert sources(nodes) == ["recipe", "odd", "hours"]
    assert len(screener.batches) == 1
