"""The `alknet-firewall` command, run as a real process on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny import INJECTION, tiny_rows

CLI = [sys.executable, "-m", "alknet_firewall.cli"]


def run_cli(
    args: list[str], env: dict[str, str], **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CLI + args, env=os.environ | env, capture_output=True, text=True, timeout=300, **kwargs
    )  # type: ignore[call-overload]


def test_screen_jsonl_keeps_every_row_and_reports_bad_lines(
    tiny_env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    lines = [
        json.dumps(
            {"id": "a", "text": "The library opens at nine and closes at six.", "lang": "en"}
        ),
        "{not json",
        json.dumps({"id": "c", "text": INJECTION}),
        json.dumps({"id": "d"}),
    ]
    with source.open("wb") as handle:
        handle.write(("\n".join(lines) + "\n").encode())
        handle.write(b'{"id": "e", "text": "caf\xe9"}\n')
    out = tmp_path / "out.jsonl"
    result = run_cli(["screen", str(source), "--out", str(out), "--no-progress"], tiny_env)
    assert result.returncode == 1, result.stderr  # something failed: non-zero at the end
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in rows] == ["a", None, "c", "d", None]
    assert rows[0]["lang"] == "en" and rows[0]["decision"] in {"allow", "flag", "block"}
    assert {"score", "alarms", "codebook_version"} <= set(rows[0])
    errors = {row["line"]: row["error"] for row in rows if row["decision"] == "error"}
    assert set(errors) == {2, 4, 5}
    assert "JSON" in errors[2] and "text" in errors[4] and "UTF-8" in errors[5]


def test_screen_reads_stdin_and_folders(tiny_env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli(
        ["screen", "-", "--no-progress"],
        tiny_env,
        input=json.dumps({"id": "x", "text": INJECTION}) + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == "x"
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.txt").write_text("Stir the sauce slowly until it thickens.")
    (folder / "sub" / "two.txt").write_text(INJECTION)
    result = run_cli(["screen", str(folder), "--no-progress"], tiny_env)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [
        "one.txt",
        "sub/two.txt",
    ]


def test_bad_config_value_is_a_clear_error(tiny_env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli(["screen", "-"], tiny_env | {"ALKNET_WINDOWS__SIZE": "many"}, input="")
    assert result.returncode == 2
    assert "windows.size" in result.stderr


@pytest.mark.parametrize(
    "command", [["--help"], ["codebook", "build", "--help"], ["enqueue", "--help"]]
)
def test_help_does_not_load_torch(command: list[str]) -> None:
    code = (
        "import sys; from alknet_firewall.cli import main\n"
        f"try: main({command!r})\nexcept SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_codebook_eval_uses_the_codebooks_layers_windows_and_pooling(
    tiny_env: dict[str, str], tmp_path: Path
) -> None:
    # tiny_env leaves [model] layers at their default (4, 8, 12, 16), which the tiny
    # model's codebook (layers 1, 2, 4, 8) was not fitted on; the second run also asks
    # for other windows and pooling. Both must evaluate with the codebook's own.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = tiny_rows(seed=5, per_class=8)
    lines = (
        json.dumps({"text": text, "label": label, "kind": kind})
        for text, label, kind in zip(rows.texts, rows.labels, rows.kinds, strict=True)
    )
    (corpus / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    reports = []
    other_windows = {"ALKNET_WINDOWS__SIZE": "64", "ALKNET_WINDOWS__POOLING": "max"}
    for name, env in (("configured", {}), ("other", other_windows)):
        out = tmp_path / f"{name}.json"
        args = ["codebook", "eval", "--corpus", str(corpus), "--out", str(out)]
        result = run_cli(args, tiny_env | env)
        assert result.returncode == 0, result.stderr
        reports.append(json.loads(out.read_text()))
    assert reports[0] == reports[1] and reports[0]
