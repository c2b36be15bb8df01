"""config.toml documents the defaults, validation names the bad key, env overrides win."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from alknet_firewall.config import ConfigError, Settings, load_settings

REPO_CONFIG = Path(__file__).parent.parent / "config.toml"


def test_documented_config_equals_the_defaults() -> None:
    documented = Settings(**tomllib.loads(REPO_CONFIG.read_text(encoding="utf-8")))
    assert documented.model_dump() == Settings().model_dump()


def test_every_setting_is_documented() -> None:
    table = tomllib.loads(REPO_CONFIG.read_text(encoding="utf-8"))
    for section, fields in Settings().model_dump().items():
        if section == "queue":
            continue  # the queue's own test checks its nested tables
        assert set(fields) == set(table[section]), section


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text("[model]\ndtype = 'float8'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"model\.dtype"):
        load_settings(bad)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text("[windows]\nsizee = 64\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"windows\.sizee"):
        load_settings(bad)


def test_stride_larger_than_window_is_refused() -> None:
    with pytest.raises(ConfigError, match="would skip tokens"):
        load_settings(windows={"size": 64, "stride": 65})


def test_token_budget_is_by_device_unless_set() -> None:
    import torch

    from alknet_firewall.model import CPU_TOKEN_BUDGET, CUDA_TOKEN_BUDGET, forward_token_budget

    class OnDevice:
        def __init__(self, kind: str) -> None:
            self.device = torch.device(kind)

    assert forward_token_budget(0, OnDevice("cpu")) == CPU_TOKEN_BUDGET
    assert forward_token_budget(0, OnDevice("cuda")) == CUDA_TOKEN_BUDGET
    assert forward_token_budget(2048, OnDevice("cuda")) == 2048
    with pytest.raises(ConfigError, match=r"batching\.token_budget.*at least 64"):
        load_settings(batching={"token_budget": 10})


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[model]\ndtype = 'float32'\nlayers = [1, 3]\n", encoding="utf-8")
    monkeypatch.setenv("ALKNET_MODEL__DTYPE", "bfloat16")
    settings = load_settings(config)
    assert settings.model.dtype == "bfloat16"
    assert settings.model.layers == [1, 3]


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "config.toml"
    broken.write_text("[model\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)


def test_misspelt_environment_section_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALKNET_QEUE__BROKER_URL", "redis://elsewhere:6379/0")
    with pytest.raises(ConfigError, match="ALKNET_QEUE__BROKER_URL names no setting"):
        load_settings()
