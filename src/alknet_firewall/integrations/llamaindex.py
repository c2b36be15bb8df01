"""A LlamaIndex ingestion transformation that screens nodes before they are indexed.

    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from alknet_firewall.integrations.llamaindex import ScreeningTransform

    pipeline = IngestionPipeline(transformations=[
        SentenceSplitter(), ScreeningTransform(on_flag="mark"), embed_model])
    nodes = pipeline.run(documents=documents)  # one screen_batch per pipeline run

Placed after the splitter, it screens the chunks the index will hold, each in one
`screen_batch` call per run. Kept nodes carry the verdict in flat metadata
(`alknet_decision`, `alknet_score`, ...; `alknet_quarantine=True` when marked), which
is left out of the embedded text and of the text an LLM reads: the firewall's words
must not move a chunk's vector or enter a prompt. Queued mode: pass
`screener=alknet_firewall_producer.screener.QueueScreener()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import BaseNode, MetadataMode, TransformComponent
from pydantic import PrivateAttr

from alknet_firewall.integrations import (
    METADATA_KEYS,
    Action,
    BatchScreener,
    Policy,
    sift,
    with_verdict,
)


class ScreeningTransform(TransformComponent):
    """Screens each node's text; drops, marks or keeps flagged nodes by the policy.

    The policy fields are pydantic fields, so they are part of the transformation's
    hash in the pipeline's cache; the screener is private (not serialised).
    """

    on_flag: Action = Action.MARK
    on_block: Action = Action.DROP
    on_error: Action = Action.DROP
    _screener: BatchScreener | None = PrivateAttr(default=None)

    def __init__(self, screener: BatchScreener | None = None, **policy: Any) -> None:
        super().__init__(**policy)
        self._screener = screener

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        """The nodes the policy keeps, in order, with the verdict in their metadata."""
        policy = Policy(self.on_flag, self.on_block, self.on_error)
        texts = [node.get_content(metadata_mode=MetadataMode.NONE) for node in nodes]
        kept = []
        for node, meta in sift(nodes, texts, self._screener, policy):
            node.metadata = with_verdict(node.metadata, meta)
            # New lists: a splitter may share one list between a document's nodes.
            node.excluded_embed_metadata_keys = _hiding(node.excluded_embed_metadata_keys)
            node.excluded_llm_metadata_keys = _hiding(node.excluded_llm_metadata_keys)
            kept.append(node)
        return kept


def _hiding(excluded: list[str]) -> list[str]:
    """`excluded` with every verdict key added."""
    return [*excluded, *(key for key in METADATA_KEYS if key not in excluded)]
