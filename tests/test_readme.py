"""The README's adapter examples run as written, on the real model and shipped codebook.

Each python block preceded by `<!-- readme-test -->` is executed in a fresh namespace;
they load the configured Firewall through `default_screener`, once for all of them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")

from agents import set_tracing_disabled

from tests.conftest import skip_without_model_wheel

pytestmark = pytest.mark.real_model
README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- readme-test -->\n```python\n(.*?)```", re.DOTALL)
BLOCKS = BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_one_example_per_adapter() -> None:
    modules = ["llamafirewall", "openai_agents", "nemo", "langchain", "llamaindex"]
    for module in modules:
        assert sum(f"alknet_firewall.integrations.{module} import" in b for b in BLOCKS) == 1


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_a_readme_example_runs(
    code: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(README.parent)  # the examples read examples/ from the repository root
    skip_without_model_wheel()
    set_tracing_disabled(True)
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    assert capsys.readouterr().out.strip()  # every example prints what it got
