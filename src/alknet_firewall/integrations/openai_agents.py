"""OpenAI Agents SDK guardrails that screen with alknet-firewall.

    from agents import Agent, Runner, function_tool
    from alknet_firewall.integrations.openai_agents import input_guardrail, tool_output_guardrail

    @function_tool(tool_output_guardrails=[tool_output_guardrail()])
    def fetch_page(url: str) -> str: ...

    agent = Agent(name="helper", tools=[fetch_page], input_guardrails=[input_guardrail()])
    result = await Runner.run(agent, "Summarise https://example.org")
    # an attack in the input raises InputGuardrailTripwireTriggered;
    # an injected page reaches the model only as a rejection message

The tripwire fires on `flag`, `block` and texts that could not be screened (`trip_on`).
The SDK runs tool guardrails on function tools only: hosted tools (web or file search
run by the provider) return no output to the agent's process to screen.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any, Literal

from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrail,
    RunContextWrapper,
    ToolGuardrailFunctionOutput,
    ToolOutputGuardrail,
    ToolOutputGuardrailData,
    TResponseInputItem,
)

from alknet_firewall.integrations import (
    DEFAULT_TRIP_ON,
    BatchScreener,
    reason,
    screen_texts_async,
    trips,
    verdict_metadata,
)
from alknet_firewall.schema import Decision, Verdict


def user_texts(input: str | list[TResponseInputItem]) -> list[str]:
    """The text of every user message in an agent's input (a string is one message).
    The other items (the agent's own turns, earlier tool calls) are not untrusted input."""
    if isinstance(input, str):
        return [input]
    texts = []
    for item in input:
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            texts.extend(text for text in parts if isinstance(text, str))
    return texts


def _info(verdicts: list[Verdict]) -> dict[str, Any]:
    """What the guardrail result carries: each text's verdict and the worst one's reason."""
    worst = max(verdicts, key=lambda v: (v.decision is Decision.ERROR, v.score), default=None)
    return {
        "verdicts": [verdict_metadata(v) for v in verdicts],
        "reason": "" if worst is None else reason(worst),
    }


def input_guardrail(
    screener: BatchScreener | None = None,
    *,
    trip_on: Collection[Decision] = DEFAULT_TRIP_ON,
    run_in_parallel: bool = False,
    name: str = "alknet_firewall",
) -> InputGuardrail[Any]:
    """An input guardrail screening the user messages of a run in one batch.

    It runs before the agent by default (`run_in_parallel=False`): run alongside it, the
    first model call, and any tool call that follows, would already be under way when
    the tripwire fires.
    """

    async def screen_input(
        context: RunContextWrapper[Any], agent: Agent[Any], input: str | list[TResponseInputItem]
    ) -> GuardrailFunctionOutput:
        verdicts = await screen_texts_async(screener, user_texts(input))
        tripped = any(trips(v, trip_on) for v in verdicts)
        return GuardrailFunctionOutput(output_info=_info(verdicts), tripwire_triggered=tripped)

    return InputGuardrail(
        guardrail_function=screen_input, name=name, run_in_parallel=run_in_parallel
    )


def tool_output_guardrail(
    screener: BatchScreener | None = None,
    *,
    trip_on: Collection[Decision] = DEFAULT_TRIP_ON,
    behavior: Literal["reject_content", "raise_exception"] = "reject_content",
    name: str = "alknet_firewall_tool_output",
) -> ToolOutputGuardrail[Any]:
    """A tool output guardrail: a function tool's output that trips it never reaches the
    model. `reject_content` (default) hands the model a short notice instead and lets
    the run go on; `raise_exception` ends the run with ToolOutputGuardrailTripwireTriggered.
    Outputs that are not strings are screened as their JSON text."""

    async def screen_tool_output(data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
        output = data.output
        text = output if isinstance(output, str) else json.dumps(output, default=str)
        verdicts = await screen_texts_async(screener, [text])
        info = _info(verdicts)
        if not trips(verdicts[0], trip_on):
            return ToolGuardrailFunctionOutput.allow(output_info=info)
        if behavior == "raise_exception":
            return ToolGuardrailFunctionOutput.raise_exception(output_info=info)
        notice = f"The output of tool {data.context.tool_name!r} was withheld: {info['reason']}"
        return ToolGuardrailFunctionOutput.reject_content(message=notice, output_info=info)

    return ToolOutputGuardrail(guardrail_function=screen_tool_output, name=name)
