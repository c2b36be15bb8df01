"""Adapters that put the firewall where people already screen text.

Guardrail frameworks (`llamafirewall`, `openai_agents`, `nemo`) and RAG ingestion
pipelines (`langchain`, `llamaindex`) each get one small submodule. A submodule imports
its library at module level, since it exists only for that library; this package and
the core never import the submodules, so `import alknet_firewall` needs none of them
(tests/test_layers.py checks it). Each library is an optional extra of the same name.

What the five share lives here, so that they decide and report the same way:

- `BatchScreener`: what an adapter needs of a screener. `Firewall` is one;
  `alknet_firewall_producer.screener.QueueScreener` (a running worker fleet) is another,
  which is how the ingestion hooks get their queued mode without knowing about queues.
- `default_screener`: the configured `Firewall`, loaded once per process. Frameworks
  build guardrail objects often (LlamaFirewall makes a new scanner for every scan);
  the model must not be reloaded each time.
- `trips`, `reason`: a guardrail's yes/no and its human-readable explanation.
- `Action`, `Policy`, `judge`, `sift`: what an ingestion hook does with a flagged document.
- `verdict_metadata`: the verdict as flat metadata that any vector store accepts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from alknet_firewall.errors import ScreeningError
from alknet_firewall.schema import Decision, Verdict

T = TypeVar("T")

# Metadata keys written on screened documents. Flat primitives (str, float, bool) only:
# vector stores such as Chroma or Pinecone refuse nested values in metadata.
DECISION_KEY = "alknet_decision"
SCORE_KEY = "alknet_score"
ALARMS_KEY = "alknet_alarms"
CODEBOOK_KEY = "alknet_codebook"
ERROR_KEY = "alknet_error"
QUARANTINE_KEY = "alknet_quarantine"
METADATA_KEYS = (DECISION_KEY, SCORE_KEY, ALARMS_KEY, CODEBOOK_KEY, ERROR_KEY, QUARANTINE_KEY)

# A guardrail fails closed: a text it could not screen (too long, empty) trips it too,
# or a payload padded past the length limit would walk through.
DEFAULT_TRIP_ON: frozenset[Decision] = frozenset({Decision.FLAG, Decision.BLOCK, Decision.ERROR})


class BatchScreener(Protocol):
    """Texts in, one verdict each out, in order (`Firewall.screen_batch`)."""

    def screen_batch(self, texts: Sequence[str]) -> list[Verdict]: ...


_default: BatchScreener | None = None
_default_lock = threading.Lock()
# One screening call at a time per process: frameworks call guardrails from several
# threads or tasks at once, the model already uses every core for one batch, and the
# Firewall is not written for concurrent calls.
_screen_lock = threading.Lock()


def default_screener() -> BatchScreener:
    """The `Firewall` of the configured settings, loaded on first use, then shared."""
    global _default
    with _default_lock:
        if _default is None:
            from alknet_firewall.firewall import Firewall

            _default = Firewall.from_settings()
        return _default


def screen_texts(screener: BatchScreener | None, texts: Sequence[str]) -> list[Verdict]:
    """One `screen_batch` call for all `texts`; a screener that answers short is an error."""
    if not texts:
        return []
    screener = default_screener() if screener is None else screener
    with _screen_lock:
        verdicts = screener.screen_batch(list(texts))
    if len(verdicts) != len(texts):
        raise ScreeningError(f"the screener returned {len(verdicts)} verdicts for {len(texts)}")
    return verdicts


async def screen_texts_async(screener: BatchScreener | None, texts: Sequence[str]) -> list[Verdict]:
    """`screen_texts` in a worker thread, so an agent's event loop is not stalled by the
    model's forward passes (seconds on a CPU)."""
    return await asyncio.to_thread(screen_texts, screener, texts)


def trips(verdict: Verdict, trip_on: Collection[Decision] = DEFAULT_TRIP_ON) -> bool:
    """Whether a guardrail should stop on this verdict."""
    return verdict.decision in trip_on


def alarm_text(verdict: Verdict) -> str:
    """The alarms in one line: `attack 0.9931 [chars 12-140]; ...`, or "" for none."""
    return "; ".join(
        f"{a.signal} {a.strength:.4f} [chars {a.start}-{a.end}]" for a in verdict.alarms
    )


def reason(verdict: Verdict) -> str:
    """Why the firewall decided what it did, for a guardrail's reason or message text."""
    if verdict.decision is Decision.ERROR:
        return f"alknet-firewall could not screen the text: {verdict.error}"
    alarms = alarm_text(verdict) or "no alarm"
    return (
        f"alknet-firewall {verdict.decision.value}: score {verdict.score:.4f} ({alarms}; "
        f"codebook {verdict.codebook_version})"
    )


def verdict_metadata(verdict: Verdict) -> dict[str, Any]:
    """The verdict as flat metadata (see the keys above); `alknet_error` only on errors."""
    meta: dict[str, Any] = {
        DECISION_KEY: verdict.decision.value,
        SCORE_KEY: verdict.score,
        ALARMS_KEY: alarm_text(verdict),
        CODEBOOK_KEY: verdict.codebook_version,
    }
    if verdict.error is not None:
        meta[ERROR_KEY] = verdict.error
    return meta


class Action(StrEnum):
    """What an ingestion hook does with a document of some decision."""

    KEEP = "keep"  # pass it on; the verdict is in its metadata like everyone's
    MARK = "mark"  # pass it on with alknet_quarantine=True, for a filter or a reviewer
    DROP = "drop"  # leave it out of the output: it never reaches the index


@dataclass(frozen=True, slots=True)
class Policy:
    """Per decision, what to do. Defaults: mark `flag` (a triage signal: the flag
    threshold is the 99% quantile of benign texts), drop `block`, and drop what could
    not be screened (fail closed: an over-long text must not slip in unscreened)."""

    on_flag: Action = Action.MARK
    on_block: Action = Action.DROP
    on_error: Action = Action.DROP

    @classmethod
    def of(cls, on_flag: Action | str, on_block: Action | str, on_error: Action | str) -> Policy:
        """A policy from words, with an error that names the argument and the choices."""
        actions = []
        for name, value in (("on_flag", on_flag), ("on_block", on_block), ("on_error", on_error)):
            try:
                actions.append(Action(value))
            except ValueError:
                choices = ", ".join(a.value for a in Action)
                raise ValueError(f"{name} must be one of {choices}; got {value!r}") from None
        return cls(*actions)

    def action(self, verdict: Verdict) -> Action:
        return {
            Decision.ALLOW: Action.KEEP,
            Decision.FLAG: Action(self.on_flag),
            Decision.BLOCK: Action(self.on_block),
            Decision.ERROR: Action(self.on_error),
        }[verdict.decision]


def with_verdict(metadata: dict[str, Any], verdict_meta: dict[str, Any]) -> dict[str, Any]:
    """`metadata` with the verdict's keys replaced: a document screened again (a new
    codebook, a re-run) must not keep an old run's quarantine mark or error."""
    kept = {key: value for key, value in metadata.items() if key not in METADATA_KEYS}
    return kept | verdict_meta


def judge(
    items: Sequence[T], verdicts: Sequence[Verdict], policy: Policy
) -> list[tuple[T, dict[str, Any]]]:
    """The items `policy` keeps, each with the metadata to write on it, in input order."""
    kept = []
    for item, verdict in zip(items, verdicts, strict=True):
        action = policy.action(verdict)
        if action is Action.DROP:
            continue
        meta = verdict_metadata(verdict)
        if action is Action.MARK:
            meta[QUARANTINE_KEY] = True
        kept.append((item, meta))
    return kept


def sift(
    items: Sequence[T], texts: Sequence[str], screener: BatchScreener | None, policy: Policy
) -> list[tuple[T, dict[str, Any]]]:
    """Screen `texts` (one per item) in one batch, then `judge` the items."""
    return judge(items, screen_texts(screener, texts), policy)
