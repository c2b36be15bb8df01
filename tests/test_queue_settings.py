"""The [queue] settings: documented defaults, and the checks that guard reliability."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from alknet_firewall.queue.broker import transport_options
from alknet_firewall.queue.settings import QueueSettings

ROOT = Path(__file__).resolve().parents[1]


def test_the_documented_queue_table_holds_the_defaults() -> None:
    path = ROOT / "config.toml"
    data = tomllib.loads(path.read_text()) if path.is_file() else {}
    if "queue" not in data:  # until the lead merges config.queue.toml into config.toml
        data = tomllib.loads((ROOT / "config.queue.toml").read_text())
    assert QueueSettings(**data["queue"]) == QueueSettings()


def test_a_dead_worker_is_noticed_within_two_minutes_and_a_live_one_beats_often_enough() -> None:
    shipped = QueueSettings()
    sweep = transport_options(shipped)["unacked_restore_interval"]
    # A dead worker's messages are due after the visibility timeout, put back by the next
    # sweep; a live worker refreshes them several times within that timeout.
    assert shipped.visibility_timeout_s + sweep < 120
    assert shipped.visibility_timeout_s / shipped.heartbeat_s >= 4
    # A lost message is re-driven after redrive_after_s plus at most one sweep interval.
    assert shipped.worker.redrive_after_s * 1.25 <= 150


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(ValidationError, match="extra"):
        QueueSettings(worker={"concurency": 4})


def test_kombu_sweeps_for_lost_messages_soon_after_they_are_due() -> None:
    options = transport_options(QueueSettings(visibility_timeout_s=8))
    assert options["visibility_timeout"] == 8
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= 1
    assert options["global_keyprefix"] == "alknet:"


def test_the_old_name_of_document_tokens_still_works_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="renamed document_tokens"):
        settings = QueueSettings(batch={"token_budget": 4096})  # type: ignore[arg-type]
    assert settings.batch.document_tokens == 4096
    with pytest.raises(ValueError, match="old name of document_tokens"):
        QueueSettings(batch={"token_budget": 4096, "document_tokens": 2048})  # type: ignore[arg-type]


def test_the_old_environment_variable_still_sets_document_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from alknet_firewall.config import load_settings

    monkeypatch.setenv("ALKNET_QUEUE__BATCH__TOKEN_BUDGET", "8192")
    with pytest.warns(FutureWarning, match="ALKNET_QUEUE__BATCH__DOCUMENT_TOKENS"):
        assert load_settings().queue.batch.document_tokens == 8192
