"""Imports point down: CLI > producer | worker > queue contract > library, and no sideways.
The guardrail and RAG adapters (`alknet_firewall.integrations.*`) sit on top of the
library: nothing else imports them, and only they import the frameworks they adapt.

Read from the source with `ast` (every import, including those inside functions and
under TYPE_CHECKING), so a lazy import cannot slip an upward dependency past the check.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "alknet_firewall": ROOT / "src" / "alknet_firewall",
    "alknet_firewall_worker": ROOT / "worker" / "alknet_firewall_worker",
    "alknet_firewall_producer": ROOT / "producer" / "alknet_firewall_producer",
}

# The detector path: text in, verdicts out. It knows nothing of queues or Redis.
DETECTOR = tuple(
    f"alknet_firewall.{name}"
    for name in (
        "model",
        "model_files",
        "windows",
        "features",
        "codebook",
        "codebook_fit",
        "density",
        "scoring",
        "payloads",
        "build",
        "corpus",
        "firewall",
    )
)
QUEUE_LIBRARIES = ("celery", "kombu", "redis", "alknet_firewall.queue")
# The service layer and what it stands on: shared by the in-process path, the producer
# (no torch) and the worker, so it imports neither the model stack nor the queue.
SERVICE = tuple(
    f"alknet_firewall.{name}"
    for name in ("screening", "rows", "sources", "schema", "validation", "errors")
)

INTEGRATIONS = "alknet_firewall.integrations"
# The libraries the adapters adapt: optional extras, never needed by `import alknet_firewall`.
FRAMEWORKS = ("llamafirewall", "agents", "nemoguardrails", "langchain_core", "llama_index")
WORKER, PRODUCER = "alknet_firewall_worker", "alknet_firewall_producer"

# (importer prefix, forbidden prefixes, why)
RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("alknet_firewall", (WORKER, PRODUCER), "the library is below the queue side"),
    (WORKER, (PRODUCER,), "worker and producer share only alknet_firewall.queue"),
    (PRODUCER, (WORKER,), "worker and producer share only alknet_firewall.queue"),
    (PRODUCER, ("torch", *DETECTOR), "the producer installs and runs without torch"),
    ("alknet_firewall.queue", ("torch", *DETECTOR), "the producer imports the contract"),
    *((module, QUEUE_LIBRARIES, "the detector knows nothing of queues") for module in DETECTOR),
    *(
        (module, ("torch", "numpy", *DETECTOR, *QUEUE_LIBRARIES), "shared by every path")
        for module in SERVICE
    ),
    ("", ("alknet_firewall.cli",), "the CLI is the top: nothing imports it"),
    (INTEGRATIONS, QUEUE_LIBRARIES, "adapters take a screener; the queue's is in producer"),
]
# Only the adapters import the adapters (their shared package) and the frameworks.
TOP_OF_LIBRARY: list[tuple[tuple[str, ...], str]] = [
    ((INTEGRATIONS,), "the adapters are a top layer: only tests import them"),
    (FRAMEWORKS, "an optional extra: only its adapter imports it"),
]


def module_name(package: str, path: Path) -> str:
    parts = path.relative_to(PACKAGES[package]).with_suffix("").parts
    return ".".join((package, *parts)).removesuffix(".__init__")


def imported(tree: ast.AST) -> Iterator[str]:
    """Every module a source imports; `from a import b` counts as `a` and `a.b`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(module: str, source: str) -> list[str]:
    found = []
    for target in set(imported(ast.parse(source))):
        for importer, forbidden, why in RULES:
            if importer and not _under(module, importer):
                continue
            if module == "alknet_firewall.cli" and forbidden == ("alknet_firewall.cli",):
                continue
            hit = next((prefix for prefix in forbidden if _under(target, prefix)), None)
            if hit is not None:
                found.append(f"{module} imports {target}: {why}")
    if not _under(module, INTEGRATIONS):
        for target in set(imported(ast.parse(source))):
            for forbidden, why in TOP_OF_LIBRARY:
                if any(_under(target, prefix) for prefix in forbidden):
                    found.append(f"{module} imports {target}: {why}")
    return found


def project_modules() -> Iterator[tuple[str, Path]]:
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            yield module_name(package, path), path


def test_imports_point_down() -> None:
    problems = [
        problem
        for module, path in project_modules()
        for problem in violations(module, path.read_text(encoding="utf-8"))
    ]
    assert problems == []


def test_every_package_was_read() -> None:
    names = {module for module, _ in project_modules()}
    assert {
        "alknet_firewall.cli",
        "alknet_firewall.queue.keys",
        "alknet_firewall_worker.tasks",
    } <= names
    assert {"alknet_firewall_producer.enqueue", "alknet_firewall.firewall"} <= names


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("alknet_firewall.rows", "from alknet_firewall_worker.tasks import screen"),
        ("alknet_firewall.cli", "def f():\n    import alknet_firewall_producer.cli\n"),
        ("alknet_firewall_producer.enqueue", "from alknet_firewall_worker import runtime"),
        ("alknet_firewall_worker.runtime", "import alknet_firewall_producer"),
        ("alknet_firewall_producer.export", "from alknet_firewall.firewall import Firewall"),
        ("alknet_firewall.queue.store", "import torch"),
        ("alknet_firewall.firewall", "from alknet_firewall.queue.keys import Keys"),
        ("alknet_firewall.scoring", "import redis"),
        ("alknet_firewall_worker.tasks", "from alknet_firewall import cli"),
        ("alknet_firewall.screening", "from alknet_firewall.queue.store import ResultStore"),
        ("alknet_firewall.rows", "from alknet_firewall.firewall import Firewall"),
        ("alknet_firewall.firewall", "from alknet_firewall.integrations.nemo import register"),
        (
            "alknet_firewall_producer.screener",
            "from alknet_firewall.integrations.langchain import X",
        ),
        ("alknet_firewall.screening", "import langchain_core"),
        ("alknet_firewall_worker.runtime", "from agents import Agent"),
        (
            "alknet_firewall.integrations.langchain",
            "from alknet_firewall_producer.screener import Q",
        ),
        ("alknet_firewall.integrations.nemo", "import redis"),
    ],
)
def test_the_check_catches_an_upward_import(module: str, source: str) -> None:
    assert violations(module, source)


def test_downward_imports_pass() -> None:
    assert not violations(
        "alknet_firewall_worker.tasks", "from alknet_firewall.queue.message import TASK_NAME"
    )
    assert not violations(
        "alknet_firewall_producer.enqueue", "from alknet_firewall.sources import read_records"
    )
    assert not violations("alknet_firewall.cli", "from alknet_firewall.firewall import Firewall")
    assert not violations(
        "alknet_firewall.integrations.nemo", "from alknet_firewall.integrations import sift"
    )
    assert not violations("alknet_firewall.integrations.nemo", "import nemoguardrails")
    assert not violations(
        "alknet_firewall.integrations", "from alknet_firewall.firewall import Firewall"
    )


def test_the_library_imports_without_any_framework() -> None:
    """`import alknet_firewall` (and the Firewall, the adapters' shared helpers) load none
    of the frameworks, so their extras stay optional."""
    code = (
        "import sys, alknet_firewall, alknet_firewall.firewall, alknet_firewall.integrations\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
