"""Every adapter once on the real SmolLM2 weights and the shipped codebook: an obvious
jailbreak (from examples/, flagged at about 0.998) trips it, a recipe sentence (about
0.001) does not. The other adapter tests use a rule screener; this one checks that the
real `Firewall` plugs into each library as it is."""

from __future__ import annotations

import asyncio
import os

import pytest

os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")

from agents import Agent, InputGuardrailTripwireTriggered, Runner, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message
from langchain_core.documents import Document as LCDocument
from llama_index.core.schema import TextNode
from llamafirewall import LlamaFirewall, Role, ScanDecision, UserMessage
from llamafirewall.llamafirewall import custom_scanner_registry
from nemoguardrails import LLMRails, RailsConfig
from nemoguardrails.testing import FakeLLMModel

from alknet_firewall.firewall import Firewall
from alknet_firewall.integrations import (
    default_screener,
    langchain,
    llamafirewall,
    llamaindex,
    nemo,
)
from alknet_firewall.integrations.openai_agents import input_guardrail
from tests.conftest import skip_without_model_wheel
from tests.integration_helpers import BENIGN, example_text

pytestmark = pytest.mark.real_model
set_tracing_disabled(True)
ATTACK = example_text("attack-jailbreak-persona")


@pytest.fixture(scope="module")
def firewall() -> Firewall:
    """The adapters' own default (the configured Firewall), shared with test_readme.py."""
    skip_without_model_wheel()
    screener = default_screener()
    assert isinstance(screener, Firewall)
    return screener


def test_the_real_model_decides_as_these_tests_assume(firewall: Firewall) -> None:
    attack, benign = firewall.screen_batch([ATTACK, BENIGN])
    assert attack.decision.value in {"flag", "block"} and benign.decision.value == "allow"


def test_llamafirewall(firewall: Firewall) -> None:
    name = llamafirewall.register(firewall, "alknet_real")
    try:
        lf = LlamaFirewall({Role.USER: [name]})
        assert lf.scan(UserMessage(ATTACK)).decision is not ScanDecision.ALLOW
        assert lf.scan(UserMessage(BENIGN)).decision is ScanDecision.ALLOW
    finally:
        custom_scanner_registry.pop(name, None)


def test_openai_agents(firewall: Firewall) -> None:
    model = ScriptedModel([[assistant_message("Butter it.")]])
    agent = Agent(name="a", model=model, input_guardrails=[input_guardrail(firewall)])
    with pytest.raises(InputGuardrailTripwireTriggered):
        asyncio.run(Runner.run(agent, ATTACK))
    assert asyncio.run(Runner.run(agent, BENIGN)).final_output == "Butter it."


def test_nemo(firewall: Firewall) -> None:
    yaml = "rails:\n  input:\n    flows:\n      - alknet screen input\n"
    config = RailsConfig.from_content(yaml_content=yaml, colang_content=nemo.COLANG)
    rails = nemo.register(LLMRails(config, llm=FakeLLMModel(responses=["Butter it."])), firewall)
    refused = rails.generate(messages=[{"role": "user", "content": ATTACK}])
    assert refused["content"] == "I'm sorry, I can't respond to that."
    assert rails.generate(messages=[{"role": "user", "content": BENIGN}])["content"] == "Butter it."


def test_ingestion_hooks(firewall: Firewall) -> None:
    docs = [LCDocument(page_content=t, id=str(i)) for i, t in enumerate([ATTACK, BENIGN])]
    kept = langchain.ScreeningTransformer(firewall, on_flag="drop").transform_documents(docs)
    assert [d.id for d in kept] == ["1"]
    assert kept[0].metadata["alknet_decision"] == "allow"
    assert kept[0].metadata["alknet_codebook"] == firewall.codebook_version

    nodes = [TextNode(text=ATTACK, id_="a"), TextNode(text=BENIGN, id_="b")]
    marked = llamaindex.ScreeningTransform(firewall, on_flag="mark", on_block="mark")(nodes)
    assert [bool(n.metadata.get("alknet_quarantine")) for n in marked] == [True, False]
