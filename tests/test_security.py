"""Security: JSON-only messages, Redis credentials (password, ACL user) and TLS, no secret
in any output, weight integrity, and no pickle loading anywhere in the code.

Redis-backed tests run their own `redis-server` (tests/test_faults_redis.py's RedisServer)
with `requirepass`, an ACL user or TLS; worker and producer get the credentials through
ALKNET_QUEUE__BROKER_URL / RESULT_URL, as in production.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import ssl
import struct
import subprocess
import sys
import time
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from alknet_firewall.config import load_settings
from alknet_firewall.firewall import Firewall
from alknet_firewall.queue.app import create_app
from tests.queue_helpers import ROOT, Namespace, WorkerProcess, fake_verdict, worker_process
from tests.test_faults_redis import RedisServer, own_namespace, redis_server, write_corpus
from tests.tiny import tiny_settings

needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server"
)
CLI = str(Path(sys.executable).parent / "alknet-firewall")
ADMIN_PASSWORD = "adm1n-S3cret-pw"
USER_PASSWORD = "alk-S3cret-pw"
WRONG_PASSWORD = "wr0ng-S3cret-pw"


def run_cli(ns: Namespace, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`alknet-firewall ARGS` in a subprocess with the namespace's environment."""
    env = {**os.environ, **ns.env}
    return subprocess.run(
        [CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


# ---- only JSON crosses the queue ------------------------------------------------------


def test_the_app_accepts_and_sends_only_json() -> None:
    # The end-to-end check (a pickled message is refused unread) is in test_queue_e2e.
    conf = create_app(load_settings()).conf
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]
    assert (conf.task_serializer, conf.result_serializer, conf.event_serializer) == (
        "json",
        "json",
        "json",
    )


# ---- credentials ----------------------------------------------------------------------


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, Namespace]]:
    """A Redis with a default-user password, and an ACL user `alk` confined to one prefix."""
    ns = Namespace()
    acl = ["alk", "on", f">{USER_PASSWORD}", f"~{ns.prefix}*", "&*", "+@all", "-@dangerous"]
    with redis_server(
        tmp_path / "redis", "--requirepass", ADMIN_PASSWORD, "--user", *acl
    ) as server:
        yield server, ns


def user_namespace(ns: Namespace, port: int, password: str) -> Namespace:
    url = f"redis://alk:{password}@127.0.0.1:{port}/0"
    ns.env["ALKNET_QUEUE__BROKER_URL"] = url
    ns.env["ALKNET_QUEUE__RESULT_URL"] = url
    ns.client = redis.Redis.from_url(
        f"redis://:{ADMIN_PASSWORD}@127.0.0.1:{port}/0", decode_responses=True
    )
    return ns


@pytest.mark.redis
@needs_redis_server
def test_an_acl_user_runs_worker_and_producer_and_no_password_is_ever_printed(
    acl_redis: tuple[RedisServer, Namespace], tmp_path: Path
) -> None:
    server, ns = acl_redis
    user_namespace(ns, server.port, USER_PASSWORD)
    texts = write_corpus(tmp_path / "in.jsonl", 30, "s")
    log = tmp_path / "worker.log"
    outputs: list[str] = []
    with worker_process(ns, log, "--concurrency=8"):
        enqueued = run_cli(ns, "enqueue", str(tmp_path / "in.jsonl"), "--job", "acl")
        outputs += [enqueued.stdout, enqueued.stderr]
        assert enqueued.returncode == 0, enqueued.stderr
        followed = run_cli(ns, "status", "acl", "--follow")
        outputs += [followed.stdout, followed.stderr]
        assert followed.returncode == 0 and "30 of 30 done" in followed.stdout
    out = tmp_path / "out.jsonl"
    exported = run_cli(ns, "results", "acl", "--out", str(out))
    outputs += [exported.stdout, exported.stderr]
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["decision"] for r in rows] == [fake_verdict(t).decision.value for t in texts]
    # The ACL confined the user to the prefix, so every key Kombu and we wrote is under it.
    assert all(str(k).startswith(ns.prefix) for k in ns.client.keys("*"))
    worker_log = log.read_text()
    assert f"redis://alk:**@127.0.0.1:{server.port}/0" in worker_log  # Celery masks it
    for text in [worker_log, *outputs]:
        assert USER_PASSWORD not in text and ADMIN_PASSWORD not in text


@pytest.mark.redis
@needs_redis_server
def test_a_wrong_password_is_a_clear_quick_error_that_does_not_print_it(
    acl_redis: tuple[RedisServer, Namespace], tmp_path: Path
) -> None:
    server, ns = acl_redis
    user_namespace(ns, server.port, WRONG_PASSWORD)
    write_corpus(tmp_path / "in.jsonl", 3, "w")
    started = time.monotonic()
    enqueued = run_cli(ns, "enqueue", str(tmp_path / "in.jsonl"), "--job", "w")
    # Not retried for a minute: waiting does not fix a password.
    assert time.monotonic() - started < 15
    assert enqueued.returncode == 1
    assert "Redis refused the credentials" in enqueued.stderr
    assert "invalid username-password pair" in enqueued.stderr
    status = run_cli(ns, "status", "w")
    assert status.returncode == 1 and "status failed" in status.stderr
    assert "Traceback" not in status.stderr
    log = tmp_path / "worker.log"
    worker = WorkerProcess(ns, log)
    try:
        assert worker.proc.wait(timeout=60) != 0
    finally:
        worker.stop()
    worker_log = log.read_text()
    assert "the worker cannot start" in worker_log
    assert "invalid username-password pair" in worker_log
    for text in (enqueued.stdout, enqueued.stderr, status.stdout, status.stderr, worker_log):
        assert WRONG_PASSWORD not in text


def test_an_unreachable_broker_message_masks_the_password(tmp_path: Path) -> None:
    from alknet_firewall.errors import QueueUnavailable
    from alknet_firewall_producer.enqueue import enqueue

    ns = Namespace(
        ALKNET_QUEUE__PRODUCER__CONNECT_RETRIES="1",
        ALKNET_QUEUE__PRODUCER__CONNECT_BACKOFF_S="0.05",
    )
    ns.env["ALKNET_QUEUE__BROKER_URL"] = f"redis://u:{USER_PASSWORD}@127.0.0.1:1/0"
    ns.env["ALKNET_QUEUE__RESULT_URL"] = f"redis://u:{USER_PASSWORD}@127.0.0.1:1/0"
    write_corpus(tmp_path / "in.jsonl", 1, "x")
    with pytest.raises(QueueUnavailable) as caught:
        enqueue(ns.settings(), str(tmp_path / "in.jsonl"), "x")
    assert USER_PASSWORD not in str(caught.value)
    assert "redis://u:**@127.0.0.1:1/0" in str(caught.value)


# ---- TLS ------------------------------------------------------------------------------


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA, and a server certificate it signed for 127.0.0.1 (openssl CLI)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    rsa = ("-newkey", "rsa:2048", "-nodes")
    openssl(
        "req",
        "-x509",
        *rsa,
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    openssl("req", *rsa, "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    return ca, cert, key


def redis_has_tls() -> bool:
    if shutil.which("redis-server") is None or shutil.which("openssl") is None:
        return False
    # A TLS-less build says so when asked for a TLS port; one with TLS complains of no cert.
    done = subprocess.run(
        ["redis-server", "--port", "0", "--tls-port", "1", "--save", ""],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return "tls-cert-file" in done.stdout + done.stderr


def test_a_rediss_broker_url_verifies_the_server_certificate() -> None:
    # Kombu alone would connect to a rediss:// broker without verifying it (CERT_NONE).
    url = "rediss://:pw@redis.example:6380/0"
    settings = load_settings(queue={"broker_url": url, "result_url": url})
    assert create_app(settings).connection_for_write().ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    with_ca = f"{url}?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/c.key"
    options = create_app(load_settings(queue={"broker_url": with_ca})).connection_for_write().ssl
    # Kombu takes the URL's own ssl_* options; redis-py's SSLConnection, which gets them,
    # requires a verified certificate unless told otherwise.
    assert options.get("ssl_cert_reqs", ssl.CERT_REQUIRED) == ssl.CERT_REQUIRED
    assert (options["ssl_ca_certs"], options["ssl_certfile"]) == ("/etc/ca.pem", "/c.pem")
    assert create_app(load_settings()).connection_for_write().ssl is None  # plain redis://


@pytest.mark.redis
@pytest.mark.skipif(not redis_has_tls(), reason="redis-server built without TLS")
def test_worker_and_producer_over_tls_and_an_unverified_server_is_refused(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path / "tls")
    tls = ["--port", "0", "--tls-auth-clients", "no", "--requirepass", ADMIN_PASSWORD]
    tls += ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)]
    server = RedisServer(tmp_path / "redis", *tls)
    server.args += ["--tls-port", str(server.port)]
    probe = ["redis-cli", "--tls", "--cacert", str(ca), "-p", str(server.port)]
    server.start(ready=[*probe, "--no-auth-warning", "-a", ADMIN_PASSWORD, "ping"])
    try:
        base = f"rediss://:{ADMIN_PASSWORD}@127.0.0.1:{server.port}/0"
        ns = own_namespace(f"{base}?ssl_ca_certs={ca}")
        ns.client = redis.Redis.from_url(f"{base}?ssl_ca_certs={ca}", decode_responses=True)
        texts = write_corpus(tmp_path / "in.jsonl", 10, "t")
        log = tmp_path / "worker.log"
        with worker_process(ns, log, "--concurrency=4"):
            enqueued = run_cli(ns, "enqueue", str(tmp_path / "in.jsonl"), "--job", "tls")
            assert enqueued.returncode == 0, enqueued.stderr
            followed = run_cli(ns, "status", "tls", "--follow")
            assert followed.returncode == 0 and "10 of 10 done" in followed.stdout
        rows = ns.client.hvals(f"{ns.prefix}job:tls:results")
        decisions = sorted(json.loads(r)["decision"] for r in rows)
        assert decisions == sorted(fake_verdict(t).decision.value for t in texts)
        assert ADMIN_PASSWORD not in log.read_text() + enqueued.stdout + enqueued.stderr
        # The same server without our CA: its certificate cannot be verified, so no one
        # talks to it (neither the result store nor the broker).
        bare = own_namespace(base, ALKNET_QUEUE__PRODUCER__CONNECT_RETRIES="0")
        refused = run_cli(bare, "enqueue", str(tmp_path / "in.jsonl"), "--job", "bare")
        assert refused.returncode == 1 and "certificate verify failed" in refused.stderr
        worker = WorkerProcess(bare, tmp_path / "bare.log")
        try:
            assert worker.proc.wait(timeout=60) != 0
        finally:
            worker.stop()
        assert "certificate verify failed" in (tmp_path / "bare.log").read_text()
    finally:
        server.stop()


# ---- model and codebook integrity -----------------------------------------------------


def _flip_a_weight(path: Path, tensor: str) -> None:
    """Change one byte of `tensor`'s data in a safetensors file, leaving the header valid."""
    data = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    start, _end = header[tensor]["data_offsets"]
    data[8 + header_len + start + 3] ^= 0x40  # the exponent byte of the first float32
    path.write_bytes(bytes(data))


def test_altered_model_weights_are_refused_with_a_clear_message(
    tiny_model_dir: Path, tiny_codebook_dir: Path, tmp_path: Path
) -> None:
    altered = tmp_path / "model"
    shutil.copytree(tiny_model_dir, altered)
    weights = next(altered.glob("*.safetensors"))
    _flip_a_weight(weights, "model.layers.0.mlp.down_proj.weight")
    settings = tiny_settings(altered, tmp_path / "cache", tiny_codebook_dir)
    with pytest.raises(Exception, match="weights") as caught:
        Firewall.from_settings(settings)
    assert "sha256:" in str(caught.value)  # names the digests that differ


def test_a_truncated_weights_file_is_refused(
    tiny_model_dir: Path, tiny_codebook_dir: Path, tmp_path: Path
) -> None:
    altered = tmp_path / "model"
    shutil.copytree(tiny_model_dir, altered)
    weights = next(altered.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(Exception):  # noqa: B017  # safetensors' own error: any refusal will do
        Firewall.from_settings(tiny_settings(altered, tmp_path / "cache", tiny_codebook_dir))


def test_a_folder_with_only_pickle_weights_is_refused(tmp_path: Path) -> None:
    from alknet_firewall.model_files import ModelSourceError, resolve_model_folder

    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    settings = load_settings(model={"source": "local", "local_path": str(folder)})
    with pytest.raises(ModelSourceError, match="never loaded"):
        resolve_model_folder(settings.model)


# ---- nothing loads pickle ---------------------------------------------------------------

SOURCE_DIRS = [ROOT / "src", ROOT / "worker", ROOT / "producer"]
FORBIDDEN = [
    r"\btorch\.load\b",
    r"\b(c?pickle|dill|joblib|shelve|marshal)\.",  # pickle.load(s), joblib.load...
    r"\b(import|from)\s+(c?pickle|dill|joblib|shelve|marshal)\b",
    r"weights_only\s*=\s*False",
    r"use_safetensors\s*=\s*False",
    r"\bnp\.load\b.*allow_pickle\s*=\s*True",
    r"allow_pickle\s*=\s*True",
    r"\.bin\b",
    r"\bserializer\s*=\s*[\"'](pickle|yaml|msgpack)",
]


def python_files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in d.rglob("*.py") if "__pycache__" not in p.parts)


def code_lines(path: Path) -> dict[int, str]:
    """Each line's code without its strings and comments (prose may say "never pickle"),
    keyword arguments' string values kept: `serializer="pickle"` must still be caught."""
    lines: dict[int, list[str]] = {}
    with path.open("rb") as f:
        tokens = list(tokenize.tokenize(f.readline))
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT:
            continue
        is_value = i > 0 and tokens[i - 1].string == "="
        if tok.type == tokenize.STRING and not is_value:
            continue
        lines.setdefault(tok.start[0], []).append(tok.string)
    return {n: " ".join(parts) for n, parts in lines.items()}


def forbidden_lines(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        for number, code in code_lines(path).items():
            compact = re.sub(r"\s*([.=(])\s*", r"\1", code)
            found += [f"{path}:{number}: {code}" for p in FORBIDDEN if re.search(p, compact)]
    return found


def test_the_pickle_scan_catches_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""never pickle"""  # prose is fine\n'
        "import pickle\n"
        "state = torch.load(path, weights_only = False)\n"
        'app.send_task("t", serializer="pickle")\n'
        'weights = load("pytorch_model.bin")\n'
    )
    assert [line.split(":")[1] for line in forbidden_lines([bad])] == ["2", "3", "3", "4"]


def test_no_code_path_can_load_pickle() -> None:
    found = forbidden_lines(python_files())
    assert not found, "\n".join(found)
    # The scan does see code: the safe loader is found where it is.
    assert any(
        "use_safetensors=True" in re.sub(r"\s*=\s*", "=", c)
        for c in code_lines(ROOT / "src/alknet_firewall/model.py").values()
    )


def test_every_model_load_insists_on_safetensors_or_gguf() -> None:
    """Each `Auto*Model*.from_pretrained(...)` passes use_safetensors=True (or reads a GGUF
    file, which holds no pickle): transformers would otherwise fall back to *.bin."""
    calls = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else ""
            if node.func.attr == "from_pretrained" and "Model" in name:
                keywords = {k.arg: k.value for k in node.keywords}
                safe = keywords.get("use_safetensors")
                ok = (isinstance(safe, ast.Constant) and safe.value is True) or (
                    "gguf_file" in keywords
                )
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
    assert calls, "no model loading found: the test looks in the wrong place"
    assert [where for where, ok in calls if not ok] == []
