"""Tests for the input readers: real files in tmp_path, properties over generated inputs."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alknet_firewall.schema import Document
from alknet_firewall.sources import Record, UnreadableRecord, read_records

# --- helpers -----------------------------------------------------------------------------


def write_lines(path: Path, lines: list[bytes | str | dict[str, Any]]) -> Path:
    """Write one line per item: dicts as JSON, str as UTF-8, bytes as they are."""
    parts = []
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        parts.append(line.encode() if isinstance(line, str) else line)
    path.write_bytes(b"\n".join(parts) + b"\n")
    return path


def read(source: str | Path, **kwargs: Any) -> list[Record]:
    return list(read_records(source, **kwargs))


def docs(records: list[Record]) -> list[Document]:
    assert all(isinstance(r, Document) for r in records), records
    return [r for r in records if isinstance(r, Document)]


def only_error(records: list[Record]) -> UnreadableRecord:
    errors = [r for r in records if isinstance(r, UnreadableRecord)]
    assert len(errors) == 1, records
    return errors[0]


def summary(records: list[Record]) -> list[tuple[str | None, int | None, str | None]]:
    """(id, line, reason) per record; line and reason are None for Documents."""
    return [
        (r.id, r.line, r.reason) if isinstance(r, UnreadableRecord) else (r.id, None, None)
        for r in records
    ]


def non_blank(lines: list[bytes]) -> int:
    """Lines the JSONL reader must answer: not only JSON whitespace (or a leading BOM)."""
    if lines:
        lines = [lines[0].removeprefix(b"\xef\xbb\xbf"), *lines[1:]]
    return sum(1 for line in lines if line.strip(b" \t\r\n"))


# --- JSONL -------------------------------------------------------------------------------


def test_jsonl_ids_text_and_meta(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "in.jsonl",
        [
            {"id": "a1", "text": "first", "source": "wiki", "tags": ["x", 1], "n": None},
            {"id": 7, "text": "second"},
            {"text": "third, no id"},
            {"id": None, "text": "fourth, null id"},
        ],
    )
    got = docs(read(path))
    assert [d.id for d in got] == ["a1", "7", "in.jsonl:3", "in.jsonl:4"]
    assert [d.text for d in got] == ["first", "second", "third, no id", "fourth, null id"]
    assert got[0].meta == {"source": "wiki", "tags": ["x", 1], "n": None}
    assert got[1].meta == {}


def test_custom_fields(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [{"key": "k", "body": "hello", "text": "meta"}])
    (doc,) = docs(read(path, text_field="body", id_field="key"))
    assert (doc.id, doc.text, doc.meta) == ("k", "hello", {"text": "meta"})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"id": "x", "text": "a",}', "not valid JSON"),
        ('{"id": "x" "text": "a"}', "Expecting ',' delimiter at column 12"),
        ('["a", "b"]', "not a JSON object (got array)"),
        ("42", "not a JSON object (got int)"),
        ('"just a string"', "not a JSON object (got string)"),
        ('{"id": "x"}', "no 'text' field"),
        ('{"id": "x", "text": 12}', "'text' is not a string (got int)"),
        ('{"id": "x", "text": ["a"]}', "'text' is not a string (got array)"),
        ('{"id": "x", "text": null}', "'text' is not a string (got null)"),
        ('{"id": "x", "text": {"a": 1}}', "'text' is not a string (got object)"),
        ('{"id": "x", "text": ""}', "empty text"),
        ('{"id": "x", "text": " \\n\\t "}', "empty text"),
        ('{"id": true, "text": "a"}', "'id' is not a string or integer (got bool)"),
        ('{"id": 1.5, "text": "a"}', "'id' is not a string or integer (got float)"),
        ('{"id": "x", "text": "a", "score": NaN}', "NaN is not a JSON number"),
        ('{"id": "x", "text": "a", "score": -Infinity}', "-Infinity is not a JSON number"),
        ('{"id": "x", "text": "a", "score": 1e999}', "out of range"),
        ('{"id": "x", "text": "a", "n": ' + "9" * 5000 + "}", "not valid JSON"),
        ('{"id": "x", "text": "\\ud800"}', "text holds an unpaired surrogate"),
        ('{"id": "x", "text": "ok", "note": ["\\udfff"]}', "field 'note' holds an unpaired"),
        ('{"id": "\\ud800", "text": "ok"}', "'id' holds an unpaired surrogate"),
        ("[" * 100_000, "nested too deeply"),
        ('{"a":' * 100_000, "not valid JSON"),
    ],
)
def test_jsonl_bad_rows_become_errors_at_their_line(tmp_path: Path, line: str, reason: str) -> None:
    # A good row, a blank line, the bad row (line 3), a good row: rows in = records out.
    path = write_lines(tmp_path / "in.jsonl", ['{"text": "a"}', "", line, '{"text": "b"}'])
    records = read(path)
    assert len(records) == 3
    err = only_error(records)
    assert records[1] is err
    assert err.line == 3
    assert err.location == str(path)
    assert reason in err.reason
    assert [r.text for r in records if isinstance(r, Document)] == ["a", "b"]


def test_error_keeps_the_id_when_it_was_read(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [{"id": "q", "text": ""}, {"text": 3}])
    first, second = read(path)
    assert isinstance(first, UnreadableRecord) and first.id == "q"
    assert isinstance(second, UnreadableRecord) and second.id == "in.jsonl:2"


def test_duplicate_ids_are_errors_for_the_later_rows(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "in.jsonl",
        [{"id": "a1", "text": "x"}, {"id": "b", "text": "y"}, "", {"id": "a1", "text": "z"}],
    )
    first, second, third = read(path)
    assert isinstance(first, Document) and isinstance(second, Document)
    assert isinstance(third, UnreadableRecord)
    assert (third.line, third.id) == (4, "a1")
    assert third.reason == "duplicate id 'a1' (first seen at line 1)"


def test_an_int_id_and_its_string_collide(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [{"id": 1, "text": "x"}, {"id": "1", "text": "y"}])
    assert "duplicate id '1'" in only_error(read(path)).reason


def test_invalid_utf8_only_breaks_its_own_line(tmp_path: Path) -> None:
    bad = b'{"id": "b", "text": "caf\xe9"}'  # Latin-1 e-acute
    path = write_lines(tmp_path / "in.jsonl", [{"text": "one"}, bad, {"text": "three"}])
    records = read(path)
    err = only_error(records)
    assert (err.line, err.id) == (2, None)
    assert err.reason == "not UTF-8 at byte 25"
    assert [d.text for d in records if isinstance(d, Document)] == ["one", "three"]


def test_latin1_file_gives_not_utf8_errors(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"text": "Grüße"}\n{"text": "plain"}\n'.encode("latin-1"))
    first, second = read(path)
    assert isinstance(first, UnreadableRecord) and first.reason.startswith("not UTF-8")
    assert isinstance(second, Document) and second.text == "plain"


def test_utf16_file_gives_errors_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "utf16.jsonl"
    path.write_bytes('{"text": "one"}\n{"text": "two"}\n'.encode("utf-16"))
    records = read(path)
    assert records
    assert all(isinstance(r, UnreadableRecord) and "UTF-16" in r.reason for r in records)


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "x"}\n')
    assert [d.id for d in docs(read(path))] == ["a"]


def test_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b'{"text": "a"}\r\n\r\n{"text": "b"}\r\n')
    assert [(d.id, d.text) for d in docs(read(path))] == [
        ("crlf.jsonl:1", "a"),
        ("crlf.jsonl:3", "b"),
    ]


def test_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "b"}')
    assert [d.text for d in docs(read(path))] == ["a", "b"]


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_controls_zero_width_and_bidi_are_kept_exactly(tmp_path: Path, ensure_ascii: bool) -> None:
    text = "a\x00b\u200bc\u202ed\x1b[0m\r\n\t\ufeff\u2028\U0001f600 e\x7f"
    path = write_lines(
        tmp_path / "in.jsonl", [json.dumps({"text": text}, ensure_ascii=ensure_ascii)]
    )
    (doc,) = docs(read(path))
    assert doc.text == text


def test_raw_control_characters_inside_json_strings_are_accepted(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [b'{"text": "tab\there nul\x00here"}'])
    (doc,) = docs(read(path))
    assert doc.text == "tab\there nul\x00here"


def test_surrogate_pairs_are_fine(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", ['{"text": "smile \\ud83d\\ude00"}'])
    (doc,) = docs(read(path))
    assert doc.text == "smile \U0001f600"


def test_a_ten_megabyte_line_is_read(tmp_path: Path) -> None:
    text = "word " * 2_000_000
    path = write_lines(tmp_path / "big.jsonl", [{"id": "big", "text": text}, {"text": "after"}])
    big, after = docs(read(path, max_chars=20_000_000))
    assert big.text == text and after.text == "after"


def test_text_over_max_chars_is_an_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [{"id": "a", "text": "x" * 101}, {"text": "ok"}])
    records = read(path, max_chars=100)
    assert only_error(records).reason == "text has 101 characters; limits.max_chars is 100"
    assert len(records) == 2


def test_a_line_over_the_cap_is_an_error_and_reading_goes_on(tmp_path: Path) -> None:
    lines: list[bytes | str | dict[str, Any]] = [{"text": "x" * 5_000_000}, {"text": "next"}]
    path = write_lines(tmp_path / "in.jsonl", lines)
    tracemalloc.start()
    try:
        records = read(path, max_line_bytes=64 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the 5 MB line was never held in memory
    first, second = records
    assert isinstance(first, UnreadableRecord)
    assert (first.line, first.reason) == (1, "line longer than 65,536 bytes")
    assert isinstance(second, Document) and second.text == "next"


def test_a_line_of_exactly_the_cap_is_read(tmp_path: Path) -> None:
    line = json.dumps({"text": "y" * 100})
    path = write_lines(tmp_path / "in.jsonl", [line, line.replace("y", "z") + " "])
    records = read(path, max_line_bytes=len(line))
    assert isinstance(records[0], Document)
    assert isinstance(records[1], UnreadableRecord) and "line longer than" in records[1].reason


def test_stdin(tmp_path: Path) -> None:
    data = io.BytesIO(b'{"text": "from a pipe"}\n\nnot json\n')
    doc, err = read("-", stdin=data)
    assert isinstance(doc, Document) and (doc.id, doc.text) == ("stdin:1", "from a pipe")
    assert isinstance(err, UnreadableRecord) and (err.location, err.line) == ("-", 3)


def test_stdin_as_csv_and_as_chat() -> None:
    csv_in = io.BytesIO(b"id,text\nr1,hello\n")
    assert [d.id for d in docs(read("-", fmt="csv", stdin=csv_in))] == ["r1"]
    chat_in = io.BytesIO(b'{"id": "c", "messages": [{"role": "user", "content": "hi"}]}\n')
    assert [d.id for d in docs(read("-", stdin=chat_in))] == ["c#0"]


# --- format resolution and usage errors ---------------------------------------------------


def test_missing_path_raises_at_once(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="input not found"):
        read_records(tmp_path / "nope.jsonl")  # no iteration needed


def test_format_must_fit_the_path(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [{"text": "a"}])
    with pytest.raises(IsADirectoryError):
        read_records(tmp_path, fmt="jsonl")
    with pytest.raises(NotADirectoryError):
        read_records(path, fmt="dir")
    with pytest.raises(ValueError, match="unknown input format"):
        read_records(path, fmt="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        read_records("-", fmt="dir")
    with pytest.raises(ValueError):
        read_records(path, max_chars=0)


@pytest.mark.parametrize("name", ["in.ndjson", "in.json", "in.txt", "noext"])
def test_other_suffixes_read_as_jsonl(tmp_path: Path, name: str) -> None:
    path = write_lines(tmp_path / name, [{"id": "a", "text": "x"}])
    assert [d.id for d in docs(read(path))] == ["a"]


def test_importing_sources_loads_no_model_stack() -> None:
    # The producer installs without torch or numpy, and reads its inputs through this module.
    code = (
        "import sys, alknet_firewall.sources\n"
        "heavy = {'numpy', 'torch', 'transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("name", "count"), [("documents.jsonl", 42), ("chat_log.jsonl", 20), ("docs", 4)]
)
def test_the_examples_read_cleanly(name: str, count: int) -> None:
    got = docs(read(EXAMPLES / name))
    assert len(got) == count


# --- chat logs -----------------------------------------------------------------------------


def conversation(id: str, *contents: object) -> dict[str, Any]:
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]
    return {"id": id, "messages": messages, "channel": "web"}


def test_chat_logs_give_one_document_per_message(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "chat.jsonl",
        [conversation("c1", "Hello", "Hi, how can I help?"), conversation("c2", "Bye")],
    )
    got = docs(read(path))
    assert [d.id for d in got] == ["c1#0", "c1#1", "c2#0"]
    assert got[1].text == "Hi, how can I help?"
    assert got[1].meta == {"conversation": "c1", "turn": 1, "role": "assistant", "channel": "web"}


def test_chat_message_errors_leave_the_others(tmp_path: Path) -> None:
    rows: list[bytes | str | dict[str, Any]] = [
        conversation("c1", "fine", 5, "", "also fine"),
        {"id": "c2", "messages": ["not an object", {"role": "user"}]},
        {"id": "c3", "text": "no messages here"},
        {"id": "c4", "messages": []},
        '{"id": "c5", "messages": [{"content": "\\ud800"}, {"content": "ok"}]}',
        {"id": "c6", "messages": "hello"},
    ]
    records = read(write_lines(tmp_path / "chat.jsonl", rows), fmt="chat")
    assert summary(records) == [
        ("c1#0", None, None),
        ("c1#1", 1, "'content' is not a string (got int)"),
        ("c1#2", 1, "empty text"),
        ("c1#3", None, None),
        ("c2#0", 2, "message is not an object (got string)"),
        ("c2#1", 2, "no 'content' field"),
        ("c3", 3, "no 'messages' list"),
        ("c4", 4, "empty 'messages' list"),
        ("c5#0", 5, "message holds an unpaired surrogate"),
        ("c5#1", None, None),
        ("c6", 6, "'messages' is not a list (got string)"),
    ]


def test_chat_row_problems_give_one_error_per_message(tmp_path: Path) -> None:
    rows: list[bytes | str | dict[str, Any]] = [
        {"id": [1], "messages": [{"content": "a"}, {"content": "b"}]},
        '{"id": "c", "user": "\\udc00", "messages": [{"content": "a"}, {"content": "b"}]}',
    ]
    records = read(write_lines(tmp_path / "chat.jsonl", rows), fmt="chat")
    assert len(records) == 4
    assert all(isinstance(r, UnreadableRecord) for r in records)
    assert [r.id for r in records] == [None, None, "c#0", "c#1"]


def test_chat_detection_uses_the_first_object(tmp_path: Path) -> None:
    rows: list[bytes | str | dict[str, Any]] = [
        "not json",
        conversation("c1", "hi"),
        {"id": "d", "text": "a plain row in a chat log"},
    ]
    path = write_lines(tmp_path / "chat.jsonl", rows)
    records = read(path)
    assert [r.id for r in records] == [None, "c1#0", "d"]
    assert isinstance(records[2], UnreadableRecord) and records[2].reason == "no 'messages' list"
    # Forced JSONL: the conversation row is a row without text.
    forced = read(path, fmt="jsonl")
    assert isinstance(forced[1], UnreadableRecord) and forced[1].reason == "no 'text' field"
    # A messages list next to a text field is a document with extra metadata.
    both = write_lines(tmp_path / "both.jsonl", [{"text": "t", "messages": []}])
    assert [d.text for d in docs(read(both))] == ["t"]


def test_chat_fallback_ids_and_duplicates(tmp_path: Path) -> None:
    rows: list[bytes | str | dict[str, Any]] = [
        {"messages": [{"content": "a"}]},
        conversation("x", "b"),
        conversation("x", "c", "d"),
    ]
    records = read(write_lines(tmp_path / "chat.jsonl", rows))
    assert [r.id for r in records] == ["chat.jsonl:1#0", "x#0", "x#0", "x#1"]
    assert isinstance(records[2], UnreadableRecord) and "duplicate id 'x#0'" in records[2].reason
    assert isinstance(records[3], Document)


# --- CSV -----------------------------------------------------------------------------------


def test_csv_with_quoted_multiline_fields(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(
        b"id,text,lang\r\n"
        b'a,"first line\r\nsecond line, with a comma",en\r\n'
        b'b,"she said ""ignore it""",en\r\n'
        b"\r\n"
        b",no id here,fr\r\n"
        b'd,"nul\x00 and \xe2\x80\x8b zero width",en\r\n'
    )
    got = docs(read(path))
    assert [d.id for d in got] == ["a", "b", "in.csv:3", "d"]
    assert got[0].text == "first line\r\nsecond line, with a comma"
    assert got[1].text == 'she said "ignore it"'
    assert got[3].text == "nul\x00 and \u200b zero width"
    assert got[0].meta == {"lang": "en"}


def test_csv_row_errors(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(
        b"\xef\xbb\xbfid,text\n"  # Excel's BOM
        b"a,fine\n"
        b"b,caf\xe9\n"
        b"c,\n"
        b"d,too,many\n"
        b"a,again\n"
        b"e,last\n"
    )
    records = read(path)
    assert summary(records) == [
        ("a", None, None),
        ("b", 2, "not UTF-8 in column 'text'"),
        ("c", 3, "empty text"),
        (None, 4, "row has 3 fields, the header has 2"),
        ("a", 5, "duplicate id 'a' (first seen at row 1)"),
        ("e", None, None),
    ]


def test_csv_long_fields_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    big = "z" * 300_000  # over the csv module's default field limit of 131,072
    path.write_text(f"text\n{big}\n{'q' * 5000}\nafter\n")
    first, second, third = read(path, max_line_bytes=4096)
    assert isinstance(first, UnreadableRecord) and "line longer than 4,096 bytes" in first.reason
    assert isinstance(second, UnreadableRecord) and second.line == 2
    assert isinstance(third, Document) and (third.id, third.text) == ("in.csv:3", "after")
    (doc, _, _) = read(path, max_chars=400_000)
    assert isinstance(doc, Document) and doc.text == big


def test_csv_header_problems_raise(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,body\na,x\n")
    with pytest.raises(ValueError, match="no 'text' column"):
        read(path)
    assert [d.text for d in docs(read(path, text_field="body"))] == ["x"]
    (tmp_path / "empty.csv").write_bytes(b"")
    assert read(tmp_path / "empty.csv") == []


# --- folders -------------------------------------------------------------------------------


def test_folder(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b.txt").write_text("bee")
    (root / "a.md").write_bytes(b"\xef\xbb\xbfwith a BOM\r\n")
    (root / "sub" / "deeper" / "c.txt").write_text("deep \u202e text")
    (root / "sub" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (root / "sub" / "latin1.txt").write_bytes("Grüße".encode("latin-1"))
    (root / "sub" / "empty.txt").write_bytes(b"")
    (root / ".hidden.txt").write_text("secret")
    (root / ".git" / "config").write_text("[core]")
    records = read(root)
    assert [(id, reason) for id, _, reason in summary(records)] == [
        ("a.md", None),
        ("b.txt", None),
        ("sub/deeper/c.txt", None),
        ("sub/empty.txt", "empty text"),
        ("sub/image.png", "binary file (holds NUL bytes)"),
        ("sub/latin1.txt", "not UTF-8 at byte 3"),
    ]
    texts = {r.id: r.text for r in records if isinstance(r, Document)}
    assert texts["a.md"] == "with a BOM\r\n"
    assert texts["sub/deeper/c.txt"] == "deep \u202e text"
    err = records[4]
    assert isinstance(err, UnreadableRecord)
    assert (err.location, err.line) == (str(root / "sub" / "image.png"), None)


def test_folder_file_over_the_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("x" * 500)
    (tmp_path / "chars.txt").write_text("é" * 150)  # 300 bytes, 150 characters
    big, chars = read(tmp_path, max_chars=100)
    assert isinstance(big, UnreadableRecord) and big.reason.startswith("file is 500 bytes")
    assert isinstance(chars, UnreadableRecord) and chars.reason.startswith(
        "text has 150 characters"
    )


# --- properties and fuzzing ------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
json_rows = st.dictionaries(
    st.sampled_from(["id", "text", "source", "messages", "x"]) | st.text(max_size=8),
    json_values,
    max_size=5,
)
fast = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@fast
@given(rows=st.lists(json_rows, max_size=8), ascii_only=st.booleans())
def test_every_json_row_gives_exactly_one_record(
    tmp_path: Path, rows: list[dict[str, Any]], ascii_only: bool
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in rows))
    records = read(path, fmt="jsonl")
    assert len(records) == len(rows)
    lines = [line for _, line, _ in summary(records) if line is not None]
    assert all(0 < line <= len(rows) for line in lines)
    assert lines == sorted(set(lines))
    ids = [r.id for r in records if isinstance(r, Document)]
    assert len(ids) == len(set(ids))


@fast
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12))
def test_arbitrary_bytes_never_raise(tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b"\n".join(lines))
    assert len(read(path, fmt="jsonl")) == non_blank(lines)
    assert len(read("-", fmt="jsonl", stdin=io.BytesIO(b"\n".join(lines)))) == non_blank(lines)


@fast
@given(text=st.text(min_size=1).filter(str.strip), ascii_only=st.booleans())
def test_texts_round_trip_exactly(tmp_path: Path, text: str, ascii_only: bool) -> None:
    path = tmp_path / "text.jsonl"
    path.write_text(json.dumps({"id": "t", "text": text}, ensure_ascii=ascii_only) + "\n")
    (doc,) = docs(read(path))
    assert doc.text == text


messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": json_values}),
    max_size=4,
)


@fast
@given(conversations=st.lists(messages, min_size=1, max_size=6))
def test_chat_gives_one_record_per_message(
    tmp_path: Path, conversations: list[list[dict[str, Any]]]
) -> None:
    path = tmp_path / "chat.jsonl"
    rows = [{"id": f"c{i}", "messages": m} for i, m in enumerate(conversations)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = read(path, fmt="chat")
    assert len(records) == sum(max(1, len(m)) for m in conversations)
    for record in records:
        if isinstance(record, Document):
            assert record.text.strip()
            assert record.id == f"{record.meta['conversation']}#{record.meta['turn']}"


def fuzz_corpus(seed: int) -> list[bytes]:
    """Valid JSONL, CSV and chat inputs, then the same inputs with random damage."""
    valid = [
        b'{"id": "a", "text": "hello \\u200b world", "source": "x"}\n{"text": "b"}\n',
        b'{"id": "c", "messages": [{"role": "user", "content": "hi"}]}\n',
        b'id,text\n1,"multi\nline"\n2,plain\n',
        b'\xef\xbb\xbf{"text": "\\ud83d\\ude00"}\r\n\r\n[1, 2]\n',
    ]
    rng = random.Random(seed)
    corpus = list(valid)
    for _ in range(150):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data) + 1)
            action = rng.randrange(4)
            if action == 0:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            elif action == 1:
                del data[pos : pos + rng.randint(1, 6)]
            elif action == 2:
                data[pos:pos] = rng.choice([b'"', b"\\u", b"\\ud800", b"{", b"\n", b"\x00", b","])
            else:
                data = data[:pos]
        corpus.append(bytes(data))
    return corpus


@pytest.mark.parametrize("fmt", ["auto", "jsonl", "chat", "csv"])
def test_fuzz_corpus_never_crashes(tmp_path: Path, fmt: Any) -> None:
    for n, data in enumerate(fuzz_corpus(seed=1234)):
        path = tmp_path / f"fuzz{n}.jsonl"
        path.write_bytes(data)
        try:
            records = read(path, fmt=fmt)
        except ValueError as exc:  # only CSV header problems may raise, and only those
            assert fmt == "csv" and "CSV header" in str(exc)
            continue
        assert all(isinstance(r, Document | UnreadableRecord) for r in records)
        if fmt == "jsonl":
            assert len(records) == non_blank(data.split(b"\n"))
