"""The codebook's settings win: the one place that says which of them, and how.

A codebook's numbers only mean something for the activations it was fitted on: the
model layers it read, the windows it cut, the pooling it applied and whether it read them
inside the task frame. Whatever
config.toml says under [model] layers and [windows], screening (`Firewall`, in process
and in workers) and evaluation (`codebook eval`) run with the codebook's.
"""

from __future__ import annotations

from alknet_firewall.codebook import CodebookMeta
from alknet_firewall.config import Settings


def fitted_settings(settings: Settings, meta: CodebookMeta) -> Settings:
    """`settings` with the layers, windows, pooling and framing `meta` was fitted on (a
    copy when they differ; the caller's settings are never changed)."""
    windows = {
        "size": meta.window_size,
        "stride": meta.window_stride,
        "pooling": meta.pooling,
        "framed": meta.framed,
    }
    same_windows = all(getattr(settings.windows, k) == v for k, v in windows.items())
    if same_windows and settings.model.layers == meta.layers:
        return settings
    fitted = settings.model_copy(deep=True)
    fitted.model.layers = list(meta.layers)
    fitted.windows = fitted.windows.model_validate(fitted.windows.model_dump() | windows)
    return fitted
