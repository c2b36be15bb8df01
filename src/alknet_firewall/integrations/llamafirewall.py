"""A LlamaFirewall scanner that screens with alknet-firewall.

LlamaFirewall builds a fresh scanner object for every scan, by name, with no
arguments (`create_scanner`), so a scanner cannot be handed a model at construction.
`register` therefore binds the screener to a subclass and registers that subclass under
a name; the model itself is loaded once per process (`default_screener`), not per scan.

    from llamafirewall import LlamaFirewall, Role, ToolMessage, UserMessage
    from alknet_firewall.integrations.llamafirewall import register

    name = register()  # the Firewall of config.toml, loaded on the first scan
    firewall = LlamaFirewall({Role.USER: [name], Role.TOOL: [name]})
    result = firewall.scan(ToolMessage("... ignore your instructions and ..."))
    result.decision, result.reason  # ScanDecision.BLOCK, "alknet-firewall block: ..."

Decisions map one to one: allow -> ALLOW, flag -> HUMAN_IN_THE_LOOP_REQUIRED,
block -> BLOCK. A text that could not be screened reports status ERROR with the
decision of `on_error` (BLOCK by default: fail closed).
"""

from __future__ import annotations

from typing import ClassVar

from llamafirewall import (
    Message,
    ScanDecision,
    Scanner,
    ScanResult,
    ScanStatus,
    Trace,
    register_llamafirewall_scanner,
)

from alknet_firewall.integrations import BatchScreener, reason, screen_texts_async
from alknet_firewall.schema import Decision

SCANNER_NAME = "alknet_firewall"

DECISIONS = {
    Decision.ALLOW: ScanDecision.ALLOW,
    Decision.FLAG: ScanDecision.HUMAN_IN_THE_LOOP_REQUIRED,
    Decision.BLOCK: ScanDecision.BLOCK,
}


class FirewallScanner(Scanner):
    """Screens one message's content; the alarms become the scan's reason text.

    Use `register` rather than this class: LlamaFirewall instantiates registered
    classes itself, and the class attributes below are what `register` binds.
    """

    registered_as: ClassVar[str] = SCANNER_NAME
    screener: ClassVar[BatchScreener | None] = None  # None: the configured Firewall
    on_error: ClassVar[ScanDecision] = ScanDecision.BLOCK

    def __init__(self, block_threshold: float = 1.0) -> None:
        super().__init__(self.registered_as, block_threshold)

    async def scan(self, message: Message, past_trace: Trace | None = None) -> ScanResult:
        """Screen `message.content`; the trace is not read (each message on its own)."""
        (verdict,) = await screen_texts_async(self.screener, [message.content])
        if verdict.decision is Decision.ERROR:
            return ScanResult(
                decision=self.on_error,
                reason=reason(verdict),
                score=verdict.score,
                status=ScanStatus.ERROR,
            )
        return ScanResult(
            decision=DECISIONS[verdict.decision],
            reason=reason(verdict),
            score=verdict.score,
            status=ScanStatus.SUCCESS,
        )


def register(
    screener: BatchScreener | None = None,
    name: str = SCANNER_NAME,
    *,
    on_error: ScanDecision = ScanDecision.BLOCK,
) -> str:
    """Register a `FirewallScanner` bound to `screener` under `name`; returns `name`,
    to put in a LlamaFirewall configuration (`{Role.USER: [name], Role.TOOL: [name]}`).

    Registering the same name again replaces the earlier binding (LlamaFirewall keeps one
    process-wide registry), so tests and apps can rebind it.
    """
    attributes = {"registered_as": name, "screener": screener, "on_error": on_error}
    bound = type(f"FirewallScanner_{name}", (FirewallScanner,), attributes)
    register_llamafirewall_scanner(name)(bound)
    return name
