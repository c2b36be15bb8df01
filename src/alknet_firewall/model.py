"""The detector model: a causal LM cut after the deepest layer we read, pooled per window.

`DetectorModel` is the interface the firewall and codebook builder need; `TransformersDetector`
implements it with a Hugging Face Llama-family model. Weights are only ever read from
safetensors (or converted once from GGUF to safetensors): never from pickle files.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from transformers import (
    AttentionInterface,
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    DynamicCache,
    PreTrainedTokenizerBase,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from alknet_firewall.config import ModelSettings
from alknet_firewall.fixed_rows import use_fixed_rows
from alknet_firewall.framing import Frame, build_frame
from alknet_firewall.model_files import resolve_model_folder
from alknet_firewall.windows import TokenBatch

log = logging.getLogger(__name__)

Pooling = str  # "mean" | "max" | "last"


class DetectorModel(Protocol):
    """What the firewall needs from a model: a tokenizer and per-window views."""

    model_id: str
    weight_digest: str
    layers: tuple[int, ...]
    hidden_size: int
    tokenizer: PreTrainedTokenizerBase
    frame: Frame | None

    def views(self, batch: TokenBatch, pooling: Pooling) -> dict[str, np.ndarray]:
        """Per view name, float32 (windows, width), from one forward pass: the pooled
        residual stream at each layer read (`mean8`, and its per-dimension maximum `max8`
        when the pooling is not max already); when framed, also the state of the
        frame's last token at each layer (`final8`), the end of the prompt where the model
        would start answering, and `attention`: per head of every layer run, how that
        token's attention splits between the task sentence and the window (Attention
        Tracker's ratio, as log-odds)."""
        ...


def pick_device(requested: str) -> torch.device:
    """`auto` means CUDA when present. Called in the worker process only, after any fork."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model.device is 'cuda' but torch sees no CUDA device")
    return torch.device(requested)


# Padded tokens per forward pass when [batching] token_budget is 0; config.toml gives
# the measurements behind both (small CPU batches stay in cache, a GPU needs big ones).
CPU_TOKEN_BUDGET = 4096
CUDA_TOKEN_BUDGET = 65536


def forward_token_budget(configured: int, model: object) -> int:
    """The configured budget, or the device's default when it is 0."""
    if configured:
        return configured
    device = getattr(model, "device", None)
    return CUDA_TOKEN_BUDGET if getattr(device, "type", "cpu") == "cuda" else CPU_TOKEN_BUDGET


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AVX512-bf16 or AMX), where bf16 pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "float32":
        return torch.float32
    if requested == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


# The attention implementation the detector loads the model with: PyTorch's SDPA for the
# layer outputs, plus the attention row of each window's last token, the only row the
# attention view reads (a full eager attention matrix per layer would be thrown away).
LAST_ROW_ATTENTION = "alknet_sdpa_last_row"


class TransformersDetector:
    """A Llama-family model from transformers, truncated after the deepest configured layer.

    Only layers up to max(layers) are built and loaded; the final norm is dropped, so the
    activation captured at layer L is exactly the residual stream the full model has there.
    With `framed`, every window is read inside the frame of `framing.py`, whose prefix is
    run once and kept as a key/value cache.
    """

    def __init__(
        self,
        folder: Path,
        layers: Sequence[int],
        *,
        model_id: str,
        device: str = "cpu",
        dtype: str = "float32",
        threads: int = 0,
        framed: bool = True,
    ) -> None:
        if threads > 0:
            torch.set_num_threads(threads)
        self.layers = tuple(layers)
        self.model_id = model_id
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        config = AutoConfig.from_pretrained(folder)
        deepest = max(self.layers)
        if deepest > config.num_hidden_layers:
            raise ValueError(
                f"layer {deepest} requested but {model_id} has {config.num_hidden_layers} layers"
            )
        config.num_hidden_layers = deepest
        # Weights of the dropped layers are "unexpected keys"; transformers logs each one.
        logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
        model = AutoModel.from_pretrained(
            folder,
            config=config,
            use_safetensors=True,
            dtype=torch.float32,
            attn_implementation=LAST_ROW_ATTENTION,
        )
        model.norm = torch.nn.Identity()
        self.weight_digest = _state_digest(model)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        if self.device.type == "cpu":
            use_fixed_rows(self.model)  # same text, same states, whatever its batch-mates
        self.hidden_size = int(config.hidden_size)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.frame = build_frame(self.tokenizer) if framed else None
        self._prefix_cache = self._run_prefix() if self.frame else None

    @classmethod
    def from_settings(cls, settings: ModelSettings, *, framed: bool = True) -> TransformersDetector:
        folder, model_id = resolve_model_folder(settings)
        return cls(
            folder,
            settings.layers,
            model_id=model_id,
            device=settings.device,
            dtype=settings.dtype,
            threads=settings.threads,
            framed=framed,
        )

    @torch.inference_mode()
    def _run_prefix(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values of the frame's prefix at every layer, computed once."""
        assert self.frame is not None
        ids = torch.tensor([self.frame.prefix], device=self.device)
        cache = DynamicCache()
        self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        pairs = [(layer.keys, layer.values) for layer in cache.layers]
        return [(keys, values) for keys, values in pairs if keys is not None and values is not None]

    @torch.inference_mode()
    def views(self, batch: TokenBatch, pooling: Pooling) -> dict[str, np.ndarray]:
        ids = torch.from_numpy(batch.input_ids).to(self.device)
        attention = torch.from_numpy(batch.attention_mask).to(self.device)
        pool_mask = torch.from_numpy(batch.pool_mask).to(self.device)
        last = torch.from_numpy(batch.last).to(self.device)
        rows = torch.arange(ids.shape[0], device=self.device)
        out: dict[str, torch.Tensor] = {}
        ratios: list[torch.Tensor] = []

        def capture_state(
            layer: int, module: torch.nn.Module, args: object, output: object
        ) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            assert isinstance(hidden, torch.Tensor)
            # Pool right away: the (windows, tokens, hidden) tensor is never kept.
            states = hidden.float()
            out[f"{pooling}{layer}"] = pool(states, pool_mask, pooling)
            if pooling != "max":
                # each dimension's strongest value in the window: a few unusual tokens show
                # here even where the window's mean averages them away
                out[f"max{layer}"] = pool(states, pool_mask, "max")
            if self.frame is not None:
                out[f"final{layer}"] = hidden[rows, last].float()

        def capture_attention(module: torch.nn.Module, args: object, output: object) -> None:
            assert isinstance(output, tuple) and self.frame is not None
            weights = output[1]  # (windows, heads, keys): the last token's attention row
            assert isinstance(weights, torch.Tensor)
            start, end = self.frame.task
            task = weights[:, :, start:end].sum(dim=-1)
            prefix = len(self.frame.prefix)
            text = pool_mask.to(torch.float32)[:, None, :]
            document = (weights[:, :, prefix:] * text).sum(dim=-1)
            # log-odds of Attention Tracker's task / (task + document): unbounded, so the
            # codebook's standardising and densities see a spread-out scale, not a [0, 1] pile
            ratios.append(torch.log(task + 1e-6) - torch.log(document + 1e-6))

        hooks = [
            self.model.layers[layer - 1].register_forward_hook(partial(capture_state, layer))
            for layer in self.layers
        ]
        if self.frame is not None:
            for block in self.model.layers:
                block.self_attn.alknet_last = last
                hooks.append(block.self_attn.register_forward_hook(capture_attention))
        try:
            self.model(**self.framed_inputs(ids, attention))
        finally:
            for hook in hooks:
                hook.remove()
            for block in self.model.layers:
                block.self_attn.alknet_last = None
        views = {name: array.cpu().numpy() for name, array in out.items()}
        if ratios:
            views["attention"] = torch.cat(ratios, dim=1).cpu().numpy()
        return views

    def framed_inputs(self, ids: torch.Tensor, attention: torch.Tensor) -> dict[str, object]:
        """The model's keyword arguments for a batch of windows: behind the frame's cached
        prefix when framed, as they are otherwise."""
        if self._prefix_cache is None:
            return {"input_ids": ids, "attention_mask": attention, "use_cache": False}
        windows, prefix = ids.shape[0], self._prefix_cache[0][0].shape[2]
        # The cache is extended in place by the pass: each batch gets its own, built from
        # views of the prefix tensors (the concatenation copies, the prefix stays intact).
        cache = DynamicCache(
            [
                (keys.expand(windows, -1, -1, -1), values.expand(windows, -1, -1, -1))
                for keys, values in self._prefix_cache
            ]
        )
        full_mask = torch.cat([attention.new_ones(windows, prefix), attention], dim=1)
        return {
            "input_ids": ids,
            "attention_mask": full_mask,
            "past_key_values": cache,
            "use_cache": True,
        }


def _last_row_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA, plus the softmax row of each window's last token when the detector asks."""
    output, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )
    last = getattr(module, "alknet_last", None)
    if last is None:
        return output, None
    windows, heads, queries, width = query.shape
    groups = heads // key.shape[1]
    rows = torch.arange(windows, device=query.device)
    # (windows, kv heads, group, width) against (windows, kv heads, keys, width): no copy of
    # the keys per query head
    q = query[rows, :, last].float().view(windows, key.shape[1], groups, width)
    logits = torch.einsum("bkgd,bkpd->bkgp", q, key.float()).reshape(windows, heads, -1)
    logits = logits * (scaling if scaling is not None else width**-0.5)
    past = key.shape[2] - queries
    visible = torch.arange(key.shape[2], device=key.device)[None, :] <= (past + last)[:, None]
    logits = logits.masked_fill(~visible[:, None, :], float("-inf"))
    return output, torch.softmax(logits, dim=-1)


AttentionInterface.register(LAST_ROW_ATTENTION, _last_row_attention)
AttentionMaskInterface.register(LAST_ROW_ATTENTION, sdpa_mask)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool (windows, tokens, hidden) over the tokens where mask is true: never padding."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "mean":
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    if pooling == "max":
        return hidden.masked_fill(weights == 0, float("-inf")).amax(dim=1)
    if pooling == "last":
        last = mask.long().cumsum(dim=1).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {pooling!r}: use mean, max or last")


def _state_digest(model: torch.nn.Module) -> str:
    """sha256 over the kept weights: names, shapes and fp32 bytes, in a stable order.

    Covers exactly what the activations depend on, so a codebook stays valid for a model
    that differs only in the layers we never run.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()
