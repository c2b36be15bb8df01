"""The base of every config.toml table's model, in config.py and queue/settings.py alike."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config.toml table: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")
