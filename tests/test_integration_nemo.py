"""The NeMo Guardrails actions in real `LLMRails.generate` calls, with NeMo's own fake
LLM (recording its prompts) and, for the dialog rails that retrieval rails need, a
bag-of-words embedding model registered in process: no network, no LLM."""

from __future__ import annotations

import os
import zlib
from typing import Any

# NeMo sends usage statistics unless told not to; set before it is first imported.
os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")

from nemoguardrails import LLMRails, RailsConfig
from nemoguardrails.embeddings.providers import register_embedding_provider
from nemoguardrails.embeddings.providers.base import EmbeddingModel
from nemoguardrails.testing import FakeLLMModel

from alknet_firewall.integrations import Action, Policy
from alknet_firewall.integrations.nemo import COLANG, WARNING, register
from tests.integration_helpers import ATTACK, BENIGN, SUSPECT, RuleScreener

INPUT_ONLY = """
rails:
  input:
    flows:
      - alknet screen input
"""

# Retrieval rails run when the bot answers an intent, so this one has a dialog flow.
RETRIEVAL = """
models:
  - type: embeddings
    engine: test-words
    model: words
rails:
  input:
    flows:
      - alknet screen input
  retrieval:
    flows:
      - alknet screen retrieval
"""
DIALOG = """
define user ask question
  "what does the document say?"

define flow answer
  user ask question
  bot answer question
"""


class WordCounts(EmbeddingModel):
    """Hashed bag of words: enough for NeMo to index one intent, and no download."""

    engine_name = "test-words"

    def __init__(self, embedding_model: str = "", **_: Any) -> None:
        pass

    def encode(self, documents: list[str]) -> list[list[float]]:
        vectors = []
        for doc in documents:
            vector = [0.0] * 32
            for word in doc.lower().split():
                vector[zlib.crc32(word.encode()) % 32] += 1.0
            vectors.append(vector)
        return vectors

    async def encode_async(self, documents: list[str]) -> list[list[float]]:
        return self.encode(documents)


register_embedding_provider(WordCounts)


class RecordingLLM(FakeLLMModel):
    """NeMo's fake LLM, keeping every prompt it was sent."""

    def __init__(self, responses: list[str]) -> None:
        super().__init__(responses=responses)
        self.prompts: list[str] = []

    async def generate_async(self, prompt: Any, *, stop: Any = None, **kwargs: Any) -> Any:
        self.prompts.append(str(prompt))
        return await super().generate_async(prompt, stop=stop, **kwargs)


def rails(yaml: str, colang: str, llm: RecordingLLM, screener: RuleScreener, **kw: Any) -> LLMRails:
    config = RailsConfig.from_content(yaml_content=yaml, colang_content=COLANG + colang)
    return register(LLMRails(config, llm=llm), screener, **kw)


def test_an_attack_is_refused_by_the_input_rail_before_any_llm_call() -> None:
    llm, screener = RecordingLLM(["Sure."]), RuleScreener()
    app = rails(INPUT_ONLY, "", llm, screener)
    reply = app.generate(messages=[{"role": "user", "content": ATTACK}])
    assert reply == {"role": "assistant", "content": "I'm sorry, I can't respond to that."}
    assert llm.prompts == []
    assert screener.batches == [[ATTACK]]


def test_the_verdict_is_left_in_the_context() -> None:
    app = rails(INPUT_ONLY, "", RecordingLLM([]), RuleScreener())
    options = {"output_vars": ["alknet_verdict"]}
    result = app.generate(messages=[{"role": "user", "content": ATTACK}], options=options)
    verdict = result.output_data["alknet_verdict"]  # type: ignore[union-attr]
    assert verdict["alknet_decision"] == "block"
    assert verdict["alknet_alarms"].startswith("attack 0.9995")


def test_a_benign_message_passes_the_input_rail() -> None:
    llm = RecordingLLM(["Butter the tin first."])
    app = rails(INPUT_ONLY, "", llm, RuleScreener())
    reply = app.generate(messages=[{"role": "user", "content": BENIGN}])
    assert reply["content"] == "Butter the tin first."
    assert BENIGN in llm.prompts[0]


def context_message(chunks: list[str]) -> dict[str, Any]:
    """Chunks from the application's own retriever, handed to the rails as context."""
    return {
        "role": "context",
        "content": {"relevant_chunks_sep": chunks, "relevant_chunks": "\n".join(chunks)},
    }


def ask(app: LLMRails, chunks: list[str]) -> dict[str, Any]:
    user = {"role": "user", "content": "what does the document say?"}
    return app.generate(messages=[context_message(chunks), user])  # type: ignore[return-value]


def test_the_retrieval_rail_drops_an_injected_chunk_and_warns_on_a_flagged_one() -> None:
    llm, screener = RecordingLLM(["  ask question", '  "It is about baking."']), RuleScreener()
    app = rails(RETRIEVAL, DIALOG, llm, screener)
    reply = ask(app, [BENIGN, f"Opening hours. {ATTACK}", SUSPECT])
    assert reply["content"] == "It is about baking."
    answer_prompt = llm.prompts[-1]
    assert BENIGN in answer_prompt
    assert "ATTACK" not in answer_prompt  # blocked: dropped before the LLM read it
    assert f"{WARNING}\n{SUSPECT}" in answer_prompt  # flagged: kept behind the warning
    # one batch for the user message, one for all three chunks
    assert screener.batches[-1] == [BENIGN, f"Opening hours. {ATTACK}", SUSPECT]


def test_the_chunk_policy_is_the_callers() -> None:
    llm = RecordingLLM(["  ask question", '  "ok"'])
    policy = Policy(on_flag=Action.DROP, on_block=Action.DROP)
    app = rails(RETRIEVAL, DIALOG, llm, RuleScreener(), policy=policy)
    ask(app, [BENIGN, SUSPECT])
    assert BENIGN in llm.prompts[-1]
    assert "SUSPECT" not in llm.prompts[-1]
