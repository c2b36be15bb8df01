"""The Agents SDK guardrails in real agent runs (`Runner.run`) against the SDK's own
scripted model double: no network, no LLM."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agents import (
    Agent,
    FunctionTool,
    InputGuardrailTripwireTriggered,
    Runner,
    RunResult,
    ToolOutputGuardrailTripwireTriggered,
    function_tool,
    set_tracing_disabled,
)
from agents.testing import ScriptedModel, assistant_message, function_call

from alknet_firewall.integrations.openai_agents import (
    input_guardrail,
    tool_output_guardrail,
    user_texts,
)
from tests.integration_helpers import ATTACK, BENIGN, SUSPECT, RuleScreener

set_tracing_disabled(True)  # no trace export: these runs stay on this machine


def page_tool(page: str, screener: RuleScreener, **guardrail: Any) -> FunctionTool:
    @function_tool(tool_output_guardrails=[tool_output_guardrail(screener, **guardrail)])
    def fetch_page(url: str) -> str:
        """Fetch a web page."""
        return page

    return fetch_page


def run(agent: Agent[Any], input: Any) -> RunResult:
    return asyncio.run(Runner.run(agent, input))


def test_an_attack_in_the_input_trips_before_the_model_is_called() -> None:
    screener, model = RuleScreener(), ScriptedModel([[assistant_message("hello")]])
    agent = Agent(name="a", model=model, input_guardrails=[input_guardrail(screener)])
    with pytest.raises(InputGuardrailTripwireTriggered) as caught:
        run(agent, ATTACK)
    info = caught.value.guardrail_result.output.output_info
    assert info["verdicts"][0]["alknet_decision"] == "block"
    assert "attack 0.9995" in info["reason"]
    assert model.calls == ()  # run_in_parallel=False: the model never saw the input


def test_benign_input_runs_to_the_end() -> None:
    screener = RuleScreener()
    model = ScriptedModel([[assistant_message("Lovely cake.")]])
    agent = Agent(name="a", model=model, input_guardrails=[input_guardrail(screener)])
    assert run(agent, BENIGN).final_output == "Lovely cake."
    assert screener.batches == [[BENIGN]]


def test_a_flag_trips_unless_trip_on_says_block_only() -> None:
    from alknet_firewall.schema import Decision

    model = ScriptedModel([[assistant_message("ok")]])
    strict = Agent(name="a", model=model, input_guardrails=[input_guardrail(RuleScreener())])
    with pytest.raises(InputGuardrailTripwireTriggered):
        run(strict, SUSPECT)
    lenient_guard = input_guardrail(RuleScreener(), trip_on={Decision.BLOCK})
    lenient = Agent(name="b", model=model, input_guardrails=[lenient_guard])
    assert run(lenient, SUSPECT).final_output == "ok"


def test_every_user_message_of_a_conversation_is_screened_in_one_batch() -> None:
    screener = RuleScreener()
    model = ScriptedModel([[assistant_message("ok")]])
    agent = Agent(name="a", model=model, input_guardrails=[input_guardrail(screener)])
    conversation: list[Any] = [
        {"role": "user", "content": BENIGN},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": [{"type": "input_text", "text": ATTACK}]},
    ]
    assert user_texts(conversation) == [BENIGN, ATTACK]
    with pytest.raises(InputGuardrailTripwireTriggered):
        run(agent, conversation)
    assert screener.batches == [[BENIGN, ATTACK]]


def test_an_injected_tool_output_is_withheld_from_the_model() -> None:
    screener = RuleScreener()
    model = ScriptedModel(
        [
            [function_call("fetch_page", {"url": "https://example.org"}, call_id="c1")],
            [assistant_message("The page could not be used.")],
        ]
    )
    agent = Agent(name="a", model=model, tools=[page_tool(f"Recipes. {ATTACK}", screener)])
    result = run(agent, "Summarise https://example.org")
    assert result.final_output == "The page could not be used."
    sent_back = str(model.last_call.input if model.last_call else "")
    assert "ATTACK" not in sent_back  # the model never read the page
    assert "was withheld: alknet-firewall block" in sent_back
    assert screener.batches == [[f"Recipes. {ATTACK}"]]


def test_a_benign_tool_output_reaches_the_model() -> None:
    screener = RuleScreener()
    model = ScriptedModel(
        [
            [function_call("fetch_page", {"url": "https://example.org"}, call_id="c1")],
            [assistant_message("Butter the tin.")],
        ]
    )
    agent = Agent(name="a", model=model, tools=[page_tool(BENIGN, screener)])
    assert run(agent, "Summarise it").final_output == "Butter the tin."
    assert BENIGN in str(model.last_call.input if model.last_call else "")


def test_raise_exception_behavior_ends_the_run() -> None:
    model = ScriptedModel(
        [[function_call("fetch_page", {"url": "u"}, call_id="c1")], [assistant_message("x")]]
    )
    tool = page_tool(ATTACK, RuleScreener(), behavior="raise_exception")
    with pytest.raises(ToolOutputGuardrailTripwireTriggered):
        run(Agent(name="a", model=model, tools=[tool]), "go")
