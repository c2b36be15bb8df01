"""The LlamaFirewall scanner, run by LlamaFirewall itself (`scan`, `scan_async`,
`scan_replay`) on user messages and tool outputs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from llamafirewall import (
    AssistantMessage,
    LlamaFirewall,
    Role,
    ScanDecision,
    ScanStatus,
    ToolMessage,
    UserMessage,
)
from llamafirewall.llamafirewall import custom_scanner_registry

from alknet_firewall.integrations.llamafirewall import register
from tests.integration_helpers import ATTACK, BENIGN, SUSPECT, RuleScreener


@pytest.fixture
def screener() -> Iterator[RuleScreener]:
    rules = RuleScreener()
    yield rules
    custom_scanner_registry.pop("alknet_test", None)


def firewall(screener: RuleScreener) -> LlamaFirewall:
    name = register(screener, "alknet_test")
    return LlamaFirewall({Role.USER: [name], Role.TOOL: [name]})


def test_decisions_map_and_alarms_become_the_reason(screener: RuleScreener) -> None:
    lf = firewall(screener)
    blocked = lf.scan(ToolMessage(f"Weather: sunny. {ATTACK}"))
    assert blocked.decision is ScanDecision.BLOCK
    assert blocked.score == pytest.approx(0.9995)
    assert "alknet-firewall block" in blocked.reason
    assert "attack 0.9995 [chars 50-56]" in blocked.reason  # the alarm and its span

    flagged = lf.scan(UserMessage(SUSPECT))
    assert flagged.decision is ScanDecision.HUMAN_IN_THE_LOOP_REQUIRED

    allowed = lf.scan(UserMessage(BENIGN))
    assert allowed.decision is ScanDecision.ALLOW
    assert allowed.status is ScanStatus.SUCCESS
    assert screener.batches == [[f"Weather: sunny. {ATTACK}"], [SUSPECT], [BENIGN]]


def test_only_the_configured_roles_are_screened(screener: RuleScreener) -> None:
    lf = firewall(screener)
    assert lf.scan(AssistantMessage(ATTACK)).decision is ScanDecision.ALLOW  # not configured
    assert screener.batches == []


def test_unscreenable_text_fails_closed_with_status_error(screener: RuleScreener) -> None:
    lf = firewall(screener)
    result = lf.scan(UserMessage("   "))
    assert result.decision is ScanDecision.BLOCK
    assert "could not screen" in result.reason
    # LlamaFirewall.scan reports every result as SUCCESS; scan_async passes ours through.
    result = asyncio.run(lf.scan_async(UserMessage("   ")))
    assert result.decision is ScanDecision.BLOCK and result.status is ScanStatus.ERROR


def test_on_error_can_let_unscreenable_text_through(screener: RuleScreener) -> None:
    name = register(screener, "alknet_test", on_error=ScanDecision.ALLOW)
    result = LlamaFirewall({Role.USER: [name]}).scan(UserMessage(""))
    assert result.decision is ScanDecision.ALLOW
    assert "could not screen" in result.reason


def test_a_replayed_trace_stops_at_the_injected_tool_output(screener: RuleScreener) -> None:
    trace = [UserMessage("What is the weather?"), ToolMessage(ATTACK), UserMessage(BENIGN)]
    result = firewall(screener).scan_replay(trace)
    assert result.decision is ScanDecision.BLOCK
    assert len(screener.batches) == 2  # stopped at the tool output: the third never ran


def test_async_scan_inside_a_running_event_loop(screener: RuleScreener) -> None:
    lf = firewall(screener)

    async def both() -> tuple[ScanDecision, ScanDecision]:
        attack = await lf.scan_async(ToolMessage(ATTACK))
        benign = await lf.scan_async(UserMessage(BENIGN))
        return attack.decision, benign.decision

    assert asyncio.run(both()) == (ScanDecision.BLOCK, ScanDecision.ALLOW)
