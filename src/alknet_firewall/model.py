"""The detector model: a causal LM cut after the deepest layer we read, pooled per window.

`DetectorModel` is the interface the firewall and codebook builder need; `TransformersDetector`
implements it with a Hugging Face Llama-family model. Weights are only ever read from
safetensors (or converted once from GGUF to safetensors): never from pickle files.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from alknet_firewall.config import ModelSettings
from alknet_firewall.model_files import resolve_model_folder
from alknet_firewall.windows import TokenBatch

log = logging.getLogger(__name__)

Pooling = str  # "mean" | "max" | "last"


class DetectorModel(Protocol):
    """What the firewall needs from a model: a tokenizer and pooled layer activations."""

    model_id: str
    weight_digest: str
    layers: tuple[int, ...]
    hidden_size: int
    tokenizer: PreTrainedTokenizerBase

    def pooled(self, batch: TokenBatch, pooling: Pooling) -> np.ndarray:
        """Pooled activations, float32 of shape (windows, len(layers), hidden_size)."""
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


class TransformersDetector:
    """A Llama-family model from transformers, truncated after the deepest configured layer.

    Only layers up to max(layers) are built and loaded; the final norm is dropped, so the
    activation captured at layer L is exactly the residual stream the full model has there.
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
            folder, config=config, use_safetensors=True, dtype=torch.float32
        )
        model.norm = torch.nn.Identity()
        self.weight_digest = _state_digest(model)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.hidden_size = int(config.hidden_size)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> TransformersDetector:
        folder, model_id = resolve_model_folder(settings)
        return cls(
            folder,
            settings.layers,
            model_id=model_id,
            device=settings.device,
            dtype=settings.dtype,
            threads=settings.threads,
        )

    def pooled(self, batch: TokenBatch, pooling: Pooling) -> np.ndarray:
        return self.pooled_many(batch, (pooling,))[pooling]

    @torch.inference_mode()
    def pooled_many(self, batch: TokenBatch, poolings: Sequence[Pooling]) -> dict[str, np.ndarray]:
        """Several poolings of one forward pass (bench/explore.py compares them), each
        (windows, len(layers), hidden_size)."""
        ids = torch.from_numpy(batch.input_ids).to(self.device)
        attention = torch.from_numpy(batch.attention_mask).to(self.device)
        pool_mask = torch.from_numpy(batch.pool_mask).to(self.device)
        captured: dict[str, list[torch.Tensor]] = {name: [] for name in poolings}
        wanted = {layer - 1 for layer in self.layers}

        def capture(module: torch.nn.Module, args: object, output: object) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            assert isinstance(hidden, torch.Tensor)
            # Pool right away: the (windows, tokens, hidden) tensor is never kept.
            for name in poolings:
                captured[name].append(pool(hidden.float(), pool_mask, name))

        hooks = [
            block.register_forward_hook(capture)
            for index, block in enumerate(self.model.layers)
            if index in wanted
        ]
        try:
            self.model(input_ids=ids, attention_mask=attention, use_cache=False)
        finally:
            for hook in hooks:
                hook.remove()
        return {name: torch.stack(layers, dim=1).cpu().numpy() for name, layers in captured.items()}


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
