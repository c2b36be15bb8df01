"""Throughput of screening, measured as ratios within one run on the same documents.

Modes, each in its own process so that peak RSS is its own:
  naive   the full 30-layer model in fp32, one document per forward pass,
          output_hidden_states=True, then the same codebook scoring;
  screen  Firewall.screen_batch with the defaults (truncated model, length-sorted
          token-budget batches), also per length bucket, and the `screen` command's
          chunked loop with and without the next chunk prepared ahead;
  queue   the same documents enqueued to Redis and drained by 1 and by 2 worker
          processes (`alknet-firewall worker`), timed from the first send to the last row.
The matmul peak (fp32, bf16) is measured in the same run.

    .venv/bin/python bench/throughput.py --docs 2000 --out bench/THROUGHPUT.md
    python bench/throughput.py --modes screen,naive --device cuda --token-budgets 16384,262144

Every mode also scores the sample against its labels, so that a numerical shortcut of the
defaults (bf16) is checked against the fp32 naive run on the same documents.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from alknet_firewall.config import load_settings
from alknet_firewall.corpus import corpus_files, load_rows

BUCKETS = ((0, 128), (128, 512), (512, 2048), (2048, 10**9))


def sample_rows(corpus: str, docs: int, seed: int) -> tuple[list[str], list[int]]:
    """A seeded sample across the whole corpus (its real length mix), with labels."""
    rows = load_rows(corpus_files(Path(corpus), training_only=False))
    chosen = random.Random(seed).sample(range(len(rows)), min(docs, len(rows)))
    return [rows.texts[i] for i in chosen], [rows.labels[i] for i in chosen]


def layer_flops(hidden: int, kv_hidden: int, intermediate: int) -> int:
    """Multiply-adds x 2 of one decoder layer's linear maps, per token."""
    return 2 * (2 * hidden * hidden + 2 * hidden * kv_hidden + 3 * hidden * intermediate)


def model_flops(window_lengths: list[int], layers: int, dims: dict[str, int]) -> float:
    """Linear maps on real tokens plus causal attention scores (QK^T and AV, half the
    square), over the layers actually computed."""
    per_token = layer_flops(dims["hidden"], dims["kv_hidden"], dims["intermediate"])
    lengths = np.array(window_lengths, dtype=np.float64)
    attention = 2 * 2 * dims["hidden"] * (lengths * (lengths + 1) / 2).sum()
    return float(layers * (per_token * lengths.sum() + attention))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_screen(texts: list[str], budgets: list[int]) -> dict[str, Any]:
    from alknet_firewall.firewall import Firewall
    from alknet_firewall.model import TransformersDetector
    from alknet_firewall.windows import plan_batches, tokenize_windows

    firewall = Firewall.from_settings(load_settings())
    model = firewall.model
    assert isinstance(model, TransformersDetector)  # the real model: its device and dtype
    windows = firewall.settings.windows
    counts = firewall.count_tokens(texts)
    # Warm-up: first-call allocations; on a GPU also the allocator's pools and the kernel
    # choices for every batch shape, which a worker that runs for hours has long settled.
    firewall.screen_batch(texts if model.device.type == "cuda" else texts[:8])
    # What screen_batch does before the model: tokenise into windows and plan the batches.
    began = time.perf_counter()
    found = tokenize_windows(model.tokenizer, texts, windows.size, windows.stride).windows
    extra = len(model.frame.suffix) if model.frame else 1  # the frame's suffix, or BOS
    batches = plan_batches(found, firewall.token_budget, extra)
    tokenize_seconds = time.perf_counter() - began
    lengths = [len(w.token_ids) for w in found]
    # tokens fed to the model, BOS or suffix and padding included
    padded = sum(len(b) * (max(lengths[i] for i in b) + extra) for b in batches)
    started = time.perf_counter()
    verdicts = firewall.screen_batch(texts)
    seconds = time.perf_counter() - started
    by_bucket = []
    for low, high in BUCKETS:
        chosen = [t for t, n in zip(texts, counts, strict=True) if low <= n < high]
        if not chosen:
            continue
        began = time.perf_counter()
        firewall.screen_batch(chosen)
        took = time.perf_counter() - began
        tokens = sum(n for n in counts if low <= n < high)
        by_bucket.append(
            {
                "bucket": f"{low}-{high if high < 10**9 else 'inf'}",
                "docs": len(chosen),
                "tokens": tokens,
                "tokens_per_s": tokens / took,
            }
        )
    command = run_command_loop(firewall, texts)
    default_budget = firewall.token_budget
    by_budget = []
    for budget in budgets:
        firewall.settings.batching.token_budget = budget
        began = time.perf_counter()
        firewall.screen_batch(texts)
        by_budget.append({"token_budget": budget, "seconds": time.perf_counter() - began})
    config = model.model.config
    return {
        "seconds": seconds,
        "scores": [verdict.score for verdict in verdicts],
        "tokenize_seconds": tokenize_seconds,
        "token_budget": default_budget,
        "by_budget": by_budget,
        "device": str(model.device),
        "real_tokens": sum(lengths),
        "padded_tokens": padded,
        "flops": model_flops(lengths, len(model.model.layers), _dims(config)),
        "rss_mb": peak_rss_mb(),
        "by_bucket": by_bucket,
        "dtype": str(model.dtype),
        **command,
    }


def run_command_loop(firewall: Any, texts: list[str], rounds: int = 2) -> dict[str, float]:
    """The `screen` command's loop (chunks of SCREEN_CHUNK through ScreeningService), one
    chunk after another and with the next chunk prepared ahead, alternated `rounds` times;
    the best time of each (the machine is shared)."""
    from alknet_firewall.cli import SCREEN_CHUNK
    from alknet_firewall.schema import Document
    from alknet_firewall.screening import ScreeningService

    service = ScreeningService(firewall)
    records = [Document(id=str(i), text=text) for i, text in enumerate(texts)]
    chunks = [records[i : i + SCREEN_CHUNK] for i in range(0, len(records), SCREEN_CHUNK)]
    best = {"serial_seconds": float("inf"), "ahead_seconds": float("inf")}
    for _ in range(rounds):
        began = time.perf_counter()
        serial = [service.rows(chunk) for chunk in chunks]
        best["serial_seconds"] = min(best["serial_seconds"], time.perf_counter() - began)
        began = time.perf_counter()
        ahead = list(service.rows_ahead(chunks))
        best["ahead_seconds"] = min(best["ahead_seconds"], time.perf_counter() - began)
        if ahead != serial:
            raise RuntimeError("rows prepared ahead differ from rows screened one by one")
    return best


def _dims(config: Any) -> dict[str, int]:
    head_dim = config.hidden_size // config.num_attention_heads
    return {
        "hidden": config.hidden_size,
        "kv_hidden": config.num_key_value_heads * head_dim,
        "intermediate": config.intermediate_size,
    }


def run_naive(texts: list[str]) -> dict[str, Any]:
    """What a user writes first: the whole model with eager attention, one document at a
    time (its windows, each inside the whole task prompt when the codebook is framed), all
    hidden states and attention maps returned, then the same codebook scoring."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from alknet_firewall.firewall import load_codebook
    from alknet_firewall.framing import build_frame
    from alknet_firewall.model import pick_device
    from alknet_firewall.model_files import resolve_model_folder
    from alknet_firewall.windows import make_batch, tokenize_windows

    settings = load_settings()
    device = pick_device(settings.model.device)
    folder, _ = resolve_model_folder(settings.model)
    model = AutoModel.from_pretrained(
        folder, use_safetensors=True, dtype=torch.float32, attn_implementation="eager"
    )
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)  # type: ignore[no-untyped-call]
    codebook = load_codebook(settings)
    meta = codebook.meta
    frame = build_frame(tokenizer) if meta.framed else None
    prefix = list(frame.prefix) if frame else []
    lengths: list[int] = []  # text tokens per window
    computed: list[int] = []  # tokens the model ran per window: the prompt's too
    scores: list[float] = []
    started = time.perf_counter()
    for text in texts:
        found = tokenize_windows(tokenizer, [text], meta.window_size, meta.window_stride).windows
        lengths += [len(w.token_ids) for w in found]
        computed += [len(w.token_ids) + len(prefix) for w in found]
        batch = make_batch(
            found, list(range(len(found))), tokenizer, frame.suffix if frame else None
        )
        ids = torch.from_numpy(batch.input_ids)
        mask = torch.from_numpy(batch.attention_mask)
        head = torch.tensor([prefix] * len(found), dtype=ids.dtype).reshape(len(found), -1)
        with torch.inference_mode():
            out = model(
                input_ids=torch.cat([head, ids], dim=1).to(device),
                attention_mask=torch.cat([torch.ones_like(head), mask], dim=1).to(device),
                output_hidden_states=True,
                output_attentions=frame is not None,
            )
        views = naive_views(out, batch, len(prefix), frame, meta.views, max(meta.layers))
        scores.append(float(codebook.window_probabilities(views).max()))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "scores": scores,
        "real_tokens": sum(lengths),
        "flops": model_flops(computed, model.config.num_hidden_layers, _dims(model.config)),
        "rss_mb": peak_rss_mb(),
        "dtype": "torch.float32",
    }


def naive_views(
    out: Any, batch: Any, prefix: int, frame: Any, names: list[str], depth: int
) -> dict[str, np.ndarray]:
    """The codebook's views, computed the plain way from the full model's outputs (the
    attention view over the `depth` layers the codebook was fitted on)."""
    import torch

    rows = torch.arange(batch.input_ids.shape[0])
    last = torch.from_numpy(batch.last) + prefix
    text = torch.zeros(batch.input_ids.shape[0], prefix + batch.input_ids.shape[1])
    text[:, prefix:] = torch.from_numpy(batch.pool_mask).float()
    from alknet_firewall.length_trend import WINDOW_TOKENS

    views = {WINDOW_TOKENS: batch.pool_mask.sum(axis=1, keepdims=True).astype(np.float32)}
    for name in names:
        if name == "attention":
            ratios = []
            for attention in out.attentions[:depth]:
                row = attention[rows, :, last].float().cpu()  # (windows, heads, keys)
                task = row[:, :, frame.task[0] : frame.task[1]].sum(-1)
                document = (row * text[:, None, :]).sum(-1)
                ratios.append(torch.log(task + 1e-6) - torch.log(document + 1e-6))
            views[name] = torch.cat(ratios, dim=1).numpy()
            continue
        layer = int(name.removeprefix("final").removeprefix("mean").removeprefix("max"))
        states = out.hidden_states[layer].float().cpu()
        weights = text.unsqueeze(-1)
        if name.startswith("final"):
            views[name] = states[rows, last].numpy()
        elif name.startswith("max"):
            views[name] = states.masked_fill(weights == 0, float("-inf")).amax(1).numpy()
        else:
            views[name] = ((states * weights).sum(1) / weights.sum(1)).numpy()
    return views


def run_queue(texts: list[str], workers: int) -> dict[str, Any]:
    """Enqueue the texts under a fresh key prefix and drain them with worker processes."""
    from alknet_firewall.queue.jobs import JobBook
    from alknet_firewall.queue.store import ResultStore
    from alknet_firewall_producer.enqueue import enqueue

    prefix = f"bench-{os.getpid()}-{workers}:"
    env = os.environ | {
        "ALKNET_QUEUE__KEY_PREFIX": prefix,
        "ALKNET_QUEUE__BROKER_URL": "redis://127.0.0.1:6379/9",
        "ALKNET_QUEUE__RESULT_URL": "redis://127.0.0.1:6379/9",
        # the cores split between the workers, unless the caller chose
        "ALKNET_MODEL__THREADS": os.environ.get(
            "ALKNET_MODEL__THREADS", str(max(1, (os.cpu_count() or 2) // workers))
        ),
        # several workers on one host cannot share the default metrics port
        "ALKNET_QUEUE__WORKER__METRICS_PORT": "0",
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("ALKNET_")})
    settings = load_settings()
    logs = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "alknet_firewall.cli", "worker"],
            env=env,
            stdout=(logs / f"w{i}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for i in range(workers)
    ]
    try:
        _wait_ready(logs, workers)
        source = logs / "docs.jsonl"
        source.write_text(
            "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
            encoding="utf-8",
        )
        book = JobBook(ResultStore.from_settings(settings.queue))
        started = time.perf_counter()
        enqueue(settings, str(source), "bench")
        while not ((progress := book.progress("bench")) and progress.finished):
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        rss = [_vm_hwm_mb(p.pid) for p in procs]
        return {
            "seconds": seconds,
            "workers": workers,
            "worker_rss_mb": rss,
            "producer_rss_mb": peak_rss_mb(),
            "errors": progress.errors,
        }
    finally:
        for proc in procs:
            os.killpg(proc.pid, 9)
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/9")
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        for key in client.scan_iter(match="*" + prefix + "*", count=1000):
            client.delete(key)


def _wait_ready(logs: Path, workers: int, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if (
            sum("ready" in (logs / f"w{i}.log").read_text(errors="replace") for i in range(workers))
            == workers
        ):
            return
        time.sleep(0.5)
    raise RuntimeError(f"workers not ready after {timeout_s} s; logs in {logs}")


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def matmul_peak(dtype_name: str, device: str = "cpu", budget_s: float = 2.0) -> float:
    """GFLOP/s of a square matmul repeated for about `budget_s` (bf16 without native
    support runs at about 1 GFLOP/s on some CPUs, so the time is bounded, not the repeats).
    1024x1024 on a CPU; 8192x8192 on a GPU, which small products leave idle."""
    import torch

    size = 8192 if device == "cuda" else 1024
    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    repeats, started = 0, time.perf_counter()
    while time.perf_counter() - started < budget_s:
        a @ b
        repeats += 1
        if repeats % 10 == 0:
            _sync(device)
    _sync(device)
    elapsed = time.perf_counter() - started
    return 2 * size**3 * repeats / elapsed / 1e9


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def child(mode: str, texts_file: str, workers: int, budgets: list[int]) -> None:
    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))
    if mode == "screen":
        result = run_screen(texts, budgets)
    elif mode == "naive":
        result = run_naive(texts)
    else:
        result = run_queue(texts, workers)
    print("RESULT " + json.dumps(result))


def in_child(
    mode: str, texts_file: Path, workers: int = 1, budgets: tuple[int, ...] = ()
) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--texts",
            str(texts_file),
            "--workers",
            str(workers),
            "--token-budgets",
            ",".join(map(str, budgets)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise RuntimeError(f"{mode} failed:\n{out.stderr[-3000:]}")


MODES = ("screen", "naive", "queue1", "queue2")  # the default run; any queueN is accepted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="../shared/data/corpus")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="")
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="",
        help="model.device for every mode (default: as configured)",
    )
    parser.add_argument(
        "--token-budgets",
        default="",
        help="also time screen at these [batching] token budgets (comma-separated)",
    )
    parser.add_argument("--child", default="")
    parser.add_argument("--texts", default="")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    budgets = tuple(int(b) for b in args.token_budgets.split(",") if b)
    if args.child:
        child(args.child, args.texts, args.workers, list(budgets))
        return 0
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(m for m in set(modes) - set(MODES) if not re.fullmatch(r"queue[1-9]\d*", m))
    if unknown or "screen" not in modes:
        parser.error(
            f"--modes must include screen and name only screen, naive, queueN; got {args.modes}"
        )
    if args.device:
        os.environ["ALKNET_MODEL__DEVICE"] = args.device  # the children inherit it
    texts, labels = sample_rows(args.corpus, args.docs, args.seed)
    texts_file = Path(tempfile.mkdtemp()) / "texts.json"
    texts_file.write_text(json.dumps(texts), encoding="utf-8")
    started = time.time()
    device = _peak_device(args.device)
    peaks = {name: matmul_peak(name, device) for name in ("float32", "bfloat16")}
    results: dict[str, dict[str, Any]] = {}
    for mode in modes:
        print(f"running {mode} ...", file=sys.stderr, flush=True)
        workers = int(mode[5:]) if mode.startswith("queue") else 1
        results[mode] = in_child(
            "queue" if mode.startswith("queue") else mode,
            texts_file,
            workers,
            budgets if mode == "screen" else (),
        )
    report = render(args, labels, peaks, results, time.time() - started, _machine(device))
    print(report)
    if args.out:
        Path(args.out).write_text(report, encoding="utf-8")
    return 0


def _peak_device(requested: str) -> str:
    from alknet_firewall.model import pick_device

    return pick_device(requested or load_settings().model.device).type


def _machine(device: str) -> str:
    if device == "cuda":
        import torch

        return f"1 {torch.cuda.get_device_name(0)} GPU, {os.cpu_count()} CPU cores"
    return f"{os.cpu_count()} cores, no GPU"


def render(
    args: argparse.Namespace,
    labels: list[int],
    peaks: dict[str, float],
    results: dict[str, dict[str, Any]],
    seconds: float,
    machine: str,
) -> str:
    from sklearn.metrics import roc_auc_score

    n = len(labels)
    screen = results["screen"]
    tokens = screen["real_tokens"]

    def docs_per_s(r: dict[str, Any]) -> float:
        return n / float(r["seconds"])

    command = " ".join(
        f"--{name.replace('_', '-')} {value}"
        for name, value in (
            ("docs", args.docs),
            ("seed", args.seed),
            ("modes", args.modes if args.modes != ",".join(MODES) else ""),
            ("device", args.device),
            ("token_budgets", args.token_budgets),
            ("out", args.out),
        )
        if value != ""
    )
    lines = [
        "# Throughput" + (" (GPU)" if "GPU," in machine else ""),
        "",
        f"Command: `python bench/throughput.py {command}` ({seconds:.0f} s in all). "
        f"Machine: {machine}. {n} documents sampled from the corpus ({sum(labels)} attacks), "
        f"{tokens} real tokens in windows.",
        "",
        "Settings from the environment: "
        + (
            ", ".join(
                f"`{k}={v}`" for k, v in sorted(os.environ.items()) if k.startswith("ALKNET_")
            )
            or "none"
        )
        + ".",
        "",
        f"Matmul peak measured in this run: fp32 {peaks['float32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bfloat16']:.0f} GFLOP/s.",
        "",
        "| mode | dtype | docs/s | real tokens/s | GFLOP/s (layers computed) | % fp32 peak "
        "| % bf16 peak | peak RSS MB | AUROC on the sample |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    computed = [("screen (defaults)", screen)]
    if "naive" in results:
        computed.insert(0, ("naive (30 layers, fp32, 1 doc/pass)", results["naive"]))
    for name, r in computed:
        gflops = r["flops"] / r["seconds"] / 1e9
        auroc = roc_auc_score(labels, r["scores"])
        lines.append(
            f"| {name} | {r['dtype'].removeprefix('torch.')} | {docs_per_s(r):.1f} | "
            f"{r['real_tokens'] / r['seconds']:.0f} | {gflops:.1f} | "
            f"{gflops / peaks['float32']:.0%} | {gflops / peaks['bfloat16']:.0%} | "
            f"{r['rss_mb']:.0f} | {auroc:.4f} |"
        )
    for key in sorted((m for m in results if m.startswith("queue")), key=lambda m: int(m[5:])):
        if key not in results:
            continue
        r = results[key]
        lines.append(
            f"| queue, {r['workers']} worker process(es) | {screen['dtype'].removeprefix('torch.')} "
            f"| {docs_per_s(r):.1f} | {tokens / r['seconds']:.0f} | - | - | - | workers "
            f"{', '.join(f'{x:.0f}' for x in r['worker_rss_mb'])}; producer "
            f"{r['producer_rss_mb']:.0f} | - |"
        )
    padding = 1 - screen["real_tokens"] / screen["padded_tokens"]
    lines.append("")
    if "naive" in results:
        naive = results["naive"]
        drift = np.abs(np.array(screen["scores"]) - np.array(naive["scores"]))
        lines += [
            f"- screen / naive: **{docs_per_s(screen) / docs_per_s(naive):.1f}x** docs/s.",
            f"- AUROC screen - naive (fp32): **{roc_auc_score(labels, screen['scores']) - roc_auc_score(labels, naive['scores']):+.4f}**; "
            f"document scores differ by {drift.mean():.4f} on average, {drift.max():.4f} at most.",
        ]
    for key in sorted((m for m in results if m.startswith("queue")), key=lambda m: int(m[5:])):
        if key in results:
            lines.append(
                f"- queue ({results[key]['workers']} worker(s)) / screen: "
                f"**{docs_per_s(results[key]) / docs_per_s(screen):.2f}**"
                + (f", {results[key]['errors']} error verdicts" if results[key]["errors"] else "")
                + "."
            )
    lines.append(
        f"- the `screen` command's loop (chunks of 512 documents through the screening "
        f"service): {n / screen['serial_seconds']:.1f} docs/s one chunk after another, "
        f"{n / screen['ahead_seconds']:.1f} with the next chunk read and tokenised on a "
        f"second thread during the forward passes (**{screen['serial_seconds'] / screen['ahead_seconds']:.2f}x**; "
        "best of two alternated rounds, identical rows)."
    )
    lines += [
        f"- padding: {padding:.1%} of the tokens fed to the model (BOS included as padding); "
        f"model {screen['dtype']} on {screen['device']}, token budget {screen['token_budget']} "
        "per forward pass.",
        f"- tokenising the sample into windows and planning the batches (part of screen's time) took "
        f"{screen['tokenize_seconds']:.2f} s, {screen['tokenize_seconds'] / screen['seconds']:.0%} "
        "of screen's time.",
        "",
    ]
    if screen["by_budget"]:
        lines += [
            "Screen at other token budgets (same documents):",
            "",
            "| token budget | docs/s | real tokens/s |",
            "|---|---|---|",
            f"| {screen['token_budget']} (default) | {docs_per_s(screen):.1f} | "
            f"{tokens / screen['seconds']:.0f} |",
        ]
        lines += [
            f"| {row['token_budget']} | {n / row['seconds']:.1f} | {tokens / row['seconds']:.0f} |"
            for row in screen["by_budget"]
        ]
        lines.append("")
    lines += [
        "Scaling with document length (screen, each bucket screened on its own):",
        "",
        "| tokens per document | docs | tokens | tokens/s |",
        "|---|---|---|---|",
    ]
    for row in screen["by_bucket"]:
        lines.append(
            f"| {row['bucket']} | {row['docs']} | {row['tokens']} | {row['tokens_per_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
