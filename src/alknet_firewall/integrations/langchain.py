"""A LangChain document transformer that screens documents before they are indexed.

    from langchain_core.vectorstores import InMemoryVectorStore
    from alknet_firewall.integrations.langchain import ScreeningTransformer

    screen = ScreeningTransformer(on_flag="mark", on_block="drop")
    docs = screen.transform_documents(loader.load())  # one screen_batch for the list
    store = InMemoryVectorStore.from_documents(docs, embeddings)

All the documents go to the screener in one `screen_batch` call (it batches them by
token budget itself). Every document that comes out carries the verdict in flat
metadata (`alknet_decision`, `alknet_score`, `alknet_alarms`, `alknet_codebook`); a
`mark`ed one also has `alknet_quarantine=True`. The input documents are not modified.

Queued mode, for corpora too large for this process: pass
`screener=alknet_firewall_producer.screener.QueueScreener()`; the documents then go to the
worker fleet as one job, and the result is the same as in process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.documents import BaseDocumentTransformer, Document

from alknet_firewall.integrations import Action, BatchScreener, Policy, sift, with_verdict


class ScreeningTransformer(BaseDocumentTransformer):
    """Screens `page_content`; drops, marks or keeps flagged documents by the policy.

    `screener`: None loads the configured Firewall on first use. `on_flag`, `on_block`,
    `on_error`: "drop", "mark" or "keep" (defaults: mark, drop, drop; see `Policy`).
    """

    def __init__(
        self,
        screener: BatchScreener | None = None,
        *,
        on_flag: Action | str = Action.MARK,
        on_block: Action | str = Action.DROP,
        on_error: Action | str = Action.DROP,
    ) -> None:
        self.screener = screener
        self.policy = Policy.of(on_flag, on_block, on_error)

    def transform_documents(
        self, documents: Sequence[Document], **kwargs: Any
    ) -> Sequence[Document]:
        """The documents the policy keeps, in order, as copies with the verdict added."""
        kept = sift(documents, [d.page_content for d in documents], self.screener, self.policy)
        return [
            doc.model_copy(update={"metadata": with_verdict(doc.metadata, meta)})
            for doc, meta in kept
        ]
