"""`Firewall`: the model and codebook loaded once, screening texts into verdicts."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alknet_firewall.codebook import Codebook
from alknet_firewall.codebook_settings import fitted_settings
from alknet_firewall.config import Settings, load_settings
from alknet_firewall.features import PreparedWindows, extract_prepared, prepare_windows
from alknet_firewall.model import DetectorModel, TransformersDetector, forward_token_budget
from alknet_firewall.schema import Alarm, Decision, Verdict
from alknet_firewall.scoring import DocumentScores, score_documents
from alknet_firewall.validation import text_problem

PACKAGED_CODEBOOK = Path(__file__).parent / "data" / "codebook"
# Scores are reported to 4 decimals: beyond that they carry float noise from batch
# composition (other padding widths, other matmul blocking), not information.
SCORE_DECIMALS = 4


@dataclass(frozen=True)
class PreparedTexts:
    """Texts ready for the model (`Firewall.prepare`): the refused ones' error verdicts,
    where the others are, and their windows."""

    refusals: list[Verdict | None]
    todo: list[int]  # positions of the texts that go through the model
    windows: PreparedWindows


class Firewall:
    """Screens untrusted text. Load once (seconds), then call `screen` / `screen_batch`."""

    def __init__(self, model: DetectorModel, codebook: Codebook, settings: Settings) -> None:
        codebook.check_model(
            model.model_id, model.weight_digest, list(model.layers), model.frame is not None
        )
        self.model = model
        self.codebook = codebook
        self.settings = fitted_settings(settings, codebook.meta)
        # A fast tokenizer raises "Already borrowed" when one thread changes its settings
        # while another encodes (huggingface/tokenizers#537, transformers#47085). Ours never
        # change, but a pipeline prepares on one thread while a failed batch's halves are
        # prepared again on another, and a tokenizer version that resets them per call
        # would then fail at random: one lock costs nothing beside the model.
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, codebook: Codebook | None = None
    ) -> Firewall:
        """Load the configured codebook (or take `codebook`), then the model as that
        codebook reads it (converting the weights on first use).

        The one way screening, the worker and `codebook eval` get a model: each sees the
        layers, windows, pooling and framing the codebook was fitted on.
        """
        settings = settings or load_settings()
        codebook = codebook or load_codebook(settings)
        settings = fitted_settings(settings, codebook.meta)
        model = TransformersDetector.from_settings(settings.model, framed=settings.windows.framed)
        return cls(model, codebook, settings)

    @property
    def token_budget(self) -> int:
        """Padded tokens per forward pass: the configured budget or the device's default."""
        return forward_token_budget(self.settings.batching.token_budget, self.model)

    @property
    def codebook_version(self) -> str:
        return self.codebook.meta.version

    def screen(self, text: str) -> Verdict:
        """Screen one text."""
        return self.screen_batch([text])[0]

    def screen_batch(self, texts: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        """Screen many texts in length-sorted, token-budget batches; one verdict each, in order.

        A text that cannot be screened (not a string, empty, over the length limit) gets an
        error verdict; the others are screened as usual.
        """
        return self.screen_prepared(self.prepare(texts), progress=progress)

    def prepare(self, texts: Sequence[str]) -> PreparedTexts:
        """The model-free half of `screen_batch`: refuse what cannot be screened, tokenise
        and plan the rest. Thread-safe, so a pipeline can prepare the next texts on another
        thread while `screen_prepared` runs the model on these."""
        refusals = [self._refuse(text) for text in texts]
        todo = [i for i, verdict in enumerate(refusals) if verdict is None]
        with self._tokenizer_lock:
            windows = prepare_windows(
                self.model, [texts[i] for i in todo], self.settings.windows, self.token_budget
            )
        return PreparedTexts(refusals, todo, windows)

    def screen_prepared(self, prepared: PreparedTexts, *, progress: bool = False) -> list[Verdict]:
        """The model half of `screen_batch`: one verdict per prepared text, in order."""
        verdicts = list(prepared.refusals)
        if prepared.todo:
            features = extract_prepared(
                self.model, prepared.windows, self.settings.windows.pooling, progress=progress
            )
            scores = score_documents(self.codebook, features)
            windows = np.bincount(features.doc, minlength=features.n_docs)
            for row, index in enumerate(prepared.todo):
                verdicts[index] = self._verdict(
                    scores, row, int(features.tokens_per_doc[row]), int(windows[row])
                )
        return [verdict for verdict in verdicts if verdict is not None]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Text tokens per text, as the model counts them (for batching by token budget)."""
        with self._tokenizer_lock:
            encoded = self.model.tokenizer(list(texts), add_special_tokens=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def _refuse(self, text: object) -> Verdict | None:
        reason = text_problem(text, self.settings.limits.max_chars)
        return None if reason is None else Verdict.failed(reason, self.codebook_version)

    def _verdict(self, scores: DocumentScores, row: int, tokens: int, windows: int) -> Verdict:
        if not scores.has_windows[row]:
            return Verdict.failed("text has no tokens", self.codebook_version)
        thresholds = self.codebook.meta.thresholds
        probability = np.round(scores.probability[row], SCORE_DECIMALS)
        score = float(probability.max())
        alarms = [
            Alarm(
                signal=signal,
                strength=float(probability[index]),
                start=int(scores.span[row, index, 0]),
                end=int(scores.span[row, index, 1]),
            )
            for index, signal in enumerate(self.codebook.signals)
            if probability[index] >= thresholds.flag
        ]
        alarms.sort(key=lambda alarm: -alarm.strength)
        if score >= thresholds.block:
            decision = Decision.BLOCK
        elif score >= thresholds.flag:
            decision = Decision.FLAG
        else:
            decision = Decision.ALLOW
        return Verdict(
            decision=decision,
            score=score,
            alarms=alarms,
            codebook_version=self.codebook_version,
            tokens=tokens,
            windows=windows,
        )


def load_codebook(settings: Settings) -> Codebook:
    """The configured codebook, or the one shipped in the package."""
    configured = settings.codebook.path
    return Codebook.load(Path(configured) if configured else PACKAGED_CODEBOOK)
