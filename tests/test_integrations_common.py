"""What the adapters share (alknet_firewall.integrations): no framework needed here."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

import alknet_firewall.integrations as shared
from alknet_firewall.errors import ScreeningError
from alknet_firewall.firewall import Firewall
from alknet_firewall.schema import Verdict
from tests.integration_helpers import ATTACK, BENIGN, SUSPECT, RuleScreener


def test_the_default_firewall_is_loaded_once_for_every_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads: list[int] = []

    def load(cls: type[Firewall]) -> RuleScreener:
        loads.append(1)
        return RuleScreener()

    monkeypatch.setattr(shared, "_default", None)
    monkeypatch.setattr(Firewall, "from_settings", classmethod(load))
    threads = [
        threading.Thread(target=shared.screen_texts, args=(None, [BENIGN])) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [1]


def test_a_screener_that_answers_short_is_an_error() -> None:
    class Short:
        def screen_batch(self, texts: Sequence[str]) -> list[Verdict]:
            return RuleScreener().screen_batch(texts)[:-1]

    with pytest.raises(ScreeningError, match="1 verdicts for 2"):
        shared.screen_texts(Short(), [BENIGN, ATTACK])


def test_reason_and_metadata_say_the_same_thing() -> None:
    screener = RuleScreener()
    allowed, flagged, failed = shared.screen_texts(screener, [BENIGN, SUSPECT, ""])
    assert (
        shared.reason(allowed) == "alknet-firewall allow: score 0.0100 (no alarm; codebook rules-1)"
    )
    assert shared.reason(flagged).startswith("alknet-firewall flag: score 0.9930 (attack 0.9930")
    assert shared.reason(failed) == "alknet-firewall could not screen the text: text is empty"
    meta = shared.verdict_metadata(flagged)
    assert meta["alknet_alarms"] in shared.reason(flagged)
    assert all(isinstance(v, str | float | bool) for v in meta.values())  # store-safe
    assert shared.verdict_metadata(failed)["alknet_error"] == "text is empty"


def test_policy_words_are_checked() -> None:
    assert shared.Policy.of("drop", "mark", "keep") == shared.Policy(
        shared.Action.DROP, shared.Action.MARK, shared.Action.KEEP
    )
    with pytest.raises(ValueError, match="on_error must be one of keep, mark, drop; got 'x'"):
        shared.Policy.of("drop", "drop", "x")
