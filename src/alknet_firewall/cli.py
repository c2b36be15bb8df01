"""`alknet-firewall`: screen in-process, build and evaluate codebooks, prepare the model,
and (from producer/ and worker/) run the queued service.

The CLI sits on top of every layer, and nothing imports it. The queue's commands are
plug-ins: `producer` and `worker` declare their `register` functions under the
`alknet_firewall.commands` entry-point group (pyproject.toml), so this package never
names the packages above it, and an install without them simply has no queue commands.
Heavy imports happen inside the handlers: `--help`, `enqueue` and `status` never load torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points
from itertools import islice
from pathlib import Path
from typing import IO, Any

from alknet_firewall.config import Settings, load_settings
from alknet_firewall.errors import AlknetError, InputError
from alknet_firewall.sources import FORMATS, Record

DEFAULT_CORPUS = "../shared/data/corpus"
SCREEN_CHUNK = 512  # documents per screen_batch call: long enough for length sorting to pay


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except AlknetError as exc:  # anything else is a bug: its traceback is what a report needs
        print(f"alknet-firewall: {_one_line(exc)}", file=sys.stderr)
        return 2
    return code


def _one_line(exc: BaseException) -> str:
    # Messages that quote a path or a parse error may hold newlines: one line on stderr
    # keeps log collectors and `2>&1 | tail -1` readable.
    return " ".join(str(exc).split())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alknet-firewall",
        description="Screen untrusted text for attacks on LLMs (prompt injection, jailbreaks).",
    )
    parser.add_argument(
        "--config", help="config.toml to use (default: $ALKNET_CONFIG, ./config.toml)"
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    screen = sub.add_parser("screen", help="screen documents in this process, no broker")
    screen.add_argument("input", help="JSONL (id, text), CSV, chat log, folder of text files, or -")
    screen.add_argument("--out", default="-", help="output JSONL (default: standard output)")
    screen.add_argument("--format", choices=FORMATS, default="auto")
    screen.add_argument("--no-progress", action="store_true", help="no progress bar")
    screen.set_defaults(func=run_screen)

    model = sub.add_parser("model", help="the detector model").add_subparsers(metavar="ACTION")
    prepare = model.add_parser("prepare", help="fetch/convert the model once and print its digest")
    prepare.set_defaults(func=run_prepare)

    codebook = sub.add_parser("codebook", help="build and evaluate codebooks")
    actions = codebook.add_subparsers(metavar="ACTION")
    build = actions.add_parser(
        "build", help="fit a codebook on the corpus files allowed for training"
    )
    build.add_argument("--corpus", default=DEFAULT_CORPUS, help="folder of labelled *.jsonl")
    build.add_argument("--out", required=True, help="folder to write the codebook to")
    build.add_argument("--per-file", type=int, default=None, help="sample at most N rows per file")
    build.add_argument(
        "--poison-per-group",
        type=int,
        default=150,
        help="poisoned documents (and clean twins) per attack group, see poison.py; 0 for none",
    )
    build.add_argument("--exclude", default="", help="comma-separated file stems to leave out")
    build.set_defaults(func=run_build)
    evaluate = actions.add_parser("eval", help="metrics of a codebook on labelled files")
    evaluate.add_argument("--corpus", default=DEFAULT_CORPUS)
    evaluate.add_argument("--files", default="", help="comma-separated file stems (default all)")
    evaluate.add_argument("--per-file", type=int, default=None)
    evaluate.add_argument("--codebook", default="", help="codebook folder (default: configured)")
    evaluate.add_argument("--out", default="", help="also write the metrics as JSON here")
    evaluate.set_defaults(func=run_eval)

    _register_queue_commands(sub)
    return parser


COMMANDS_GROUP = "alknet_firewall.commands"


def _register_queue_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """The commands of installed plug-ins (producer, worker), in a stable order."""
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        entry.load()(sub)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def run_screen(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from alknet_firewall.firewall import Firewall
    from alknet_firewall.screening import ScreeningService
    from alknet_firewall.sources import read_records

    settings = _settings(args)
    try:
        records = read_records(args.input, fmt=args.format, max_chars=settings.limits.max_chars)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {args.input}: {exc}") from exc
    service = ScreeningService(Firewall.from_settings(settings))
    failed = screened = 0
    with (
        _open_out(args.out) as out,
        tqdm(unit="doc", desc="screen", disable=args.no_progress, file=sys.stderr) as bar,
    ):
        for rows in service.rows_ahead(_chunks(records, SCREEN_CHUNK)):
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                failed += row["decision"] == "error"
                screened += 1
            bar.update(len(rows))
    print(f"screened {screened} documents, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while chunk := list(islice(records, size)):
        yield chunk


class _open_out:
    def __init__(self, target: str) -> None:
        self.target = target
        self.handle: IO[str] | None = None

    def __enter__(self) -> IO[str]:
        if self.target == "-":
            return sys.stdout
        Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.target, "w", encoding="utf-8")
        return self.handle

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


def run_prepare(args: argparse.Namespace) -> int:
    from alknet_firewall.model import TransformersDetector

    settings = _settings(args)
    model = TransformersDetector.from_settings(settings.model)
    print(
        json.dumps(
            {
                "model_id": model.model_id,
                "weight_digest": model.weight_digest,
                "layers": list(model.layers),
                "dtype": str(model.dtype),
            }
        )
    )
    return 0


def _stems(option: str) -> set[str]:
    """File stems from a comma-separated option value."""
    return {name for name in option.split(",") if name}


def run_build(args: argparse.Namespace) -> int:
    from alknet_firewall.build import build_codebook, with_poisoned
    from alknet_firewall.codebook import metrics_json
    from alknet_firewall.corpus import corpus_files, load_rows
    from alknet_firewall.model import TransformersDetector

    settings = _settings(args)
    files = corpus_files(Path(args.corpus), training_only=True)
    files = [path for path in files if path.stem not in _stems(args.exclude)]
    rows = load_rows(files, per_file=args.per_file, seed=settings.codebook.seed)
    corpus_rows = len(rows)
    rows = with_poisoned(rows, args.poison_per_group, settings.codebook.seed)
    print(
        f"fitting on {corpus_rows} rows from {len(files)} files and "
        f"{len(rows) - corpus_rows} poisoned documents and clean twins",
        file=sys.stderr,
    )
    model = TransformersDetector.from_settings(settings.model, framed=settings.windows.framed)
    codebook = build_codebook(model, rows, settings, progress=True)
    codebook.meta.metrics["training_files"] = [path.stem for path in files]
    codebook.meta.metrics["poisoned_per_group"] = args.poison_per_group
    codebook.save(Path(args.out))
    print(metrics_json(codebook.meta.metrics))
    print(f"codebook {codebook.meta.version} written to {args.out}", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from alknet_firewall.build import evaluate_codebook
    from alknet_firewall.codebook import Codebook
    from alknet_firewall.corpus import corpus_files, load_rows
    from alknet_firewall.firewall import Firewall

    settings = _settings(args)
    wanted = _stems(args.files)
    files = corpus_files(Path(args.corpus), training_only=False)
    files = [path for path in files if not wanted or path.stem in wanted]
    # The same loading as `screen` and the worker: the codebook's settings win.
    codebook = Codebook.load(Path(args.codebook)) if args.codebook else None
    firewall = Firewall.from_settings(settings, codebook)
    rows = load_rows(files, per_file=args.per_file, seed=firewall.settings.codebook.seed)
    report = evaluate_codebook(
        firewall.codebook, firewall.model, rows, firewall.settings, progress=True
    )
    print(format_report(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def format_report(report: dict[str, dict[str, Any]]) -> str:
    """A fixed-width table: one line per subset."""
    columns = ("attacks", "benign", "auroc", "tpr_at_1pct_fpr", "fpr_at_flag", "tpr_at_flag")
    lines = [f"{'subset':48s} " + " ".join(f"{name:>15s}" for name in columns)]
    for name, values in report.items():
        cells = []
        for column in columns:
            value = values.get(column)
            cells.append(f"{'-':>15s}" if value is None else f"{value:>15.4g}")
        lines.append(f"{name:48s} " + " ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
