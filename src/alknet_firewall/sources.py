"""Input readers: JSONL, CSV, chat logs and folders of text files, turned into Documents.

Shared by the in-process CLI (`alknet-firewall screen`) and by the producer that enqueues to
Redis, so this module imports only the standard library, pydantic and our schema: never
torch, transformers or numpy.

Every reader streams (memory is constant in the number of records, apart from the set of
ids already seen) and never raises for a bad record: a record that cannot become a
Document comes out as an `UnreadableRecord` in its place, so that rows in = rows out and the
caller can write one output row per input row. Only usage errors raise: a missing path,
a format that does not fit the path, a CSV header without the text column.

Texts are never altered: NUL bytes, zero-width and bidi control characters stay in
`Document.text`, because the alarms' character spans must point into the original text.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeAlias, get_args

from alknet_firewall.schema import Document
from alknet_firewall.validation import DEFAULT_MAX_CHARS, text_problem

__all__ = ["FORMATS", "Format", "Record", "UnreadableRecord", "read_records"]

Format: TypeAlias = Literal["auto", "jsonl", "csv", "dir", "chat"]
FORMATS: tuple[Format, ...] = get_args(Format)  # the CLI's --format choices

DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_UTF8_BOM = b"\xef\xbb\xbf"
# UTF-32-LE's mark starts with UTF-16-LE's, so these two prefixes cover all four.
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SKIP_CHUNK = 1 << 16
# A lone surrogate can only come from a JSON escape (strict UTF-8 decoding rejects encoded
# surrogates), so lines without such an escape skip the slower walk over every string.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_TYPES: dict[type, str] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "string",
    list: "array",
    dict: "object",
}


@dataclass(frozen=True, slots=True)
class UnreadableRecord:
    """An input record that could not become a Document: where it was and why.

    `location` is the input path ("-" for stdin; for folders, the file's path). `line` is
    the 1-based line number for JSONL and chat logs, the 1-based data row number (header
    excluded, blank lines not counted) for CSV, None for folder files. `id` is the
    record's id when it could be read, else None.
    """

    location: str
    line: int | None
    id: str | None
    reason: str


Record: TypeAlias = Document | UnreadableRecord


def read_records(
    source: str | Path,
    *,
    fmt: Format = "auto",
    text_field: str = "text",
    id_field: str = "id",
    max_chars: int = DEFAULT_MAX_CHARS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    stdin: BinaryIO | None = None,
) -> Iterator[Record]:
    """Stream the records of `source` as Documents, or UnreadableRecords for bad records.

    `source` is a file, a folder, or "-" for `stdin` (default `sys.stdin.buffer`). With
    `fmt="auto"`: a folder is read as "dir", a `.csv` file as "csv", anything else
    (stdin included) as "jsonl", switching to "chat" when the first JSON object read
    has a `messages` list and no `text_field`.

    Raises at once: FileNotFoundError for a missing path, NotADirectoryError /
    IsADirectoryError when `fmt` does not fit the path, ValueError for bad arguments.
    Raises ValueError on the first `next()` when a CSV header lacks `text_field` or is
    not UTF-8. Never raises for a bad record. Ids are unique within one call: a repeated
    id becomes an UnreadableRecord. Reading CSV raises the process-wide `csv.field_size_limit`
    to at least `max_chars + 1` (never lowers it).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}: use one of {', '.join(FORMATS)}")
    if max_chars < 1 or max_line_bytes < 1:
        raise ValueError("max_chars and max_line_bytes must be at least 1")
    limits = _Limits(text_field, id_field, max_chars, max_line_bytes)
    if str(source) == "-":
        if fmt == "dir":
            raise ValueError("stdin ('-') cannot be read as a folder")
        stream = stdin if stdin is not None else sys.stdin.buffer
        return _read_stream(stream, "-", "stdin", limits, fmt)
    path = Path(source)
    kind = _path_format(path, fmt)
    if kind == "dir":
        return _read_dir(path, limits)
    return _read_file(path, kind, limits)


# --- plumbing shared by the readers ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Limits:
    text_field: str
    id_field: str
    max_chars: int
    max_line_bytes: int


@dataclass(slots=True)
class _Input:
    """One input being read: where it is, its limits and the ids seen so far."""

    location: str
    name: str  # base of the fallback ids: f"{name}:{line}"
    limits: _Limits
    unit: str = "line"  # what `UnreadableRecord.line` counts, for the duplicate message
    seen: dict[str, int | None] = field(default_factory=dict)

    def error(self, line: int | None, reason: str, id: str | None = None) -> UnreadableRecord:
        return UnreadableRecord(self.location, line, id, reason)

    def fallback_id(self, line: int) -> str:
        # Line-based, so the same file gives the same ids on every run.
        return f"{self.name}:{line}"

    def claim(self, id: str, line: int | None) -> str | None:
        """Register `id`; return the reason to reject it when it was seen before."""
        if id in self.seen:
            return f"duplicate id {id!r} (first seen at {self.unit} {self.seen[id]})"
        self.seen[id] = line
        return None


def _path_format(path: Path, fmt: Format) -> Format:
    """Resolve "auto" for a path and check that the format fits it."""
    if not path.exists():
        raise FileNotFoundError(f"input not found: {_display(path)}")
    if path.is_dir():
        if fmt not in ("auto", "dir"):
            raise IsADirectoryError(f"{_display(path)} is a folder: use fmt 'dir' or 'auto'")
        return "dir"
    if fmt == "dir":
        raise NotADirectoryError(f"{_display(path)} is not a folder")
    if fmt == "auto" and path.suffix.lower() == ".csv":
        return "csv"
    # JSONL suffixes and unknown suffixes alike stay "auto": JSONL with chat detection.
    return fmt


def _read_file(path: Path, fmt: Format, limits: _Limits) -> Iterator[Record]:
    with path.open("rb") as stream:
        yield from _read_stream(stream, _display(path), path.name, limits, fmt)


def _read_stream(
    stream: BinaryIO, location: str, name: str, limits: _Limits, fmt: Format
) -> Iterator[Record]:
    if fmt == "csv":
        return _csv_records(stream, _Input(location, name, limits, unit="row"))
    return _jsonl_records(stream, _Input(location, name, limits), fmt)


def _display(path: str | Path) -> str:
    """The path as printable text: undecodable bytes in file names become U+FFFD."""
    return os.fsencode(path).decode("utf-8", errors="replace")


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _read_line(stream: BinaryIO, cap: int) -> bytes | None:
    """The next line (terminator included, b"" at the end), or None when over `cap` bytes.

    An over-long line is skipped in chunks, so no more than `cap` bytes are ever held.
    """
    raw = stream.readline(cap + 1)
    if len(raw) <= cap or raw.endswith(b"\n"):
        return raw
    while True:
        chunk = stream.readline(_SKIP_CHUNK)
        if not chunk or chunk.endswith(b"\n"):
            return None


# --- JSONL and chat logs -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    obj: dict[str, Any]
    tainted: frozenset[str]  # top-level keys whose key or value holds a lone surrogate


def _jsonl_records(stream: BinaryIO, src: _Input, fmt: Format) -> Iterator[Record]:
    mode = fmt  # "auto" until the first JSON object decides between "jsonl" and "chat"
    for row in _json_rows(stream, src):
        if isinstance(row, UnreadableRecord):
            yield row
            continue
        if mode == "auto":
            chat = isinstance(row.obj.get("messages"), list)
            mode = "chat" if chat and src.limits.text_field not in row.obj else "jsonl"
        if mode == "chat":
            yield from _chat_records(row, src)
        else:
            yield _document_record(row, src)


def _json_rows(stream: BinaryIO, src: _Input) -> Iterator[_Row | UnreadableRecord]:
    """One parsed object or one error per non-blank line; blank lines still count."""
    cap = src.limits.max_line_bytes
    utf16 = False
    line = 0
    while (raw := _read_line(stream, cap)) != b"":
        line += 1
        if raw is None:
            yield src.error(line, f"line longer than {cap:,} bytes")
            continue
        if line == 1:
            utf16 = raw.startswith(_UTF16_BOMS)
            raw = raw.removeprefix(_UTF8_BOM)  # a BOM-only first line counts as blank
        if not raw.strip(b" \t\r\n"):
            continue
        if utf16:
            # Every line of such a file is garbage as UTF-8; say why once per line.
            yield src.error(line, "not UTF-8: the input starts with a UTF-16 byte-order mark")
            continue
        yield _parse_line(raw, line, src)


def _parse_line(raw: bytes, line: int, src: _Input) -> _Row | UnreadableRecord:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return src.error(line, f"not UTF-8 at byte {exc.start + 1}")
    try:
        # strict=False accepts raw control characters (a tab, a NUL) inside strings: the
        # text is still unambiguous, and rejecting it would leave that row unscreened.
        obj = json.loads(
            text, strict=False, parse_constant=_reject_constant, parse_float=_finite_float
        )
    except RecursionError:
        return src.error(line, "not valid JSON: nested too deeply")
    except json.JSONDecodeError as exc:
        return src.error(line, f"not valid JSON: {exc.msg} at column {exc.colno}")
    except ValueError as exc:  # NaN, 1e999, integers over Python's digit limit
        return src.error(line, f"not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return src.error(line, f"not a JSON object (got {_json_type(obj)})")
    tainted: frozenset[str] = frozenset()
    if _SURROGATE_ESCAPE.search(raw):
        tainted = frozenset(k for k, v in obj.items() if _holds_surrogate(k, v))
    return _Row(line, obj, tainted)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    # json turns 1e999 into inf, which no strict JSON writer downstream can write back.
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {literal} is out of range")
    return value


def _holds_surrogate(*values: object) -> bool:
    """Whether any string in these JSON values holds an unpaired surrogate."""
    stack = list(values)  # iterative: the parsed value may be nested near the recursion limit
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return False


def _row_id(row: _Row, src: _Input) -> tuple[str | None, str | None]:
    """(id, None) or (None, reason). A missing, null or empty id gets the fallback id."""
    name = src.limits.id_field
    value = row.obj.get(name)
    if value is None or value == "":
        return src.fallback_id(row.line), None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None, f"{name!r} is not a string or integer (got {_json_type(value)})"
    if name in row.tainted:
        return None, f"{name!r} holds an unpaired surrogate"
    return str(value), None


def _document_record(row: _Row, src: _Input) -> Record:
    limits = src.limits
    id, problem = _row_id(row, src)
    if id is None:
        return src.error(row.line, problem or "no id")
    problem = src.claim(id, row.line) or _field_problem(row, limits)
    if problem:
        return src.error(row.line, problem, id)
    text = row.obj[limits.text_field]
    meta = {k: v for k, v in row.obj.items() if k not in (limits.text_field, limits.id_field)}
    return Document(id=id, text=text, meta=meta)


def _field_problem(row: _Row, limits: _Limits) -> str | None:
    """Why the row's text (or another of its fields) cannot go downstream, if it cannot."""
    name = limits.text_field
    if name not in row.obj:
        return f"no {name!r} field"
    text = row.obj[name]
    if not isinstance(text, str):
        return f"{name!r} is not a string (got {_json_type(text)})"
    if name in row.tainted:
        return "text holds an unpaired surrogate"
    if row.tainted:
        return f"field {min(row.tainted)!a} holds an unpaired surrogate"
    return text_problem(text, limits.max_chars)


def _chat_records(row: _Row, src: _Input) -> Iterator[Record]:
    """One record per message: a Document, or an UnreadableRecord for a message that is bad.

    A problem with the whole row (its id, a field other than `messages`) becomes one
    error per message, so the count of records never depends on which check failed.
    """
    messages = row.obj.get("messages")
    conv, row_problem = _row_id(row, src)
    if not isinstance(messages, list) or not messages:
        yield src.error(row.line, _messages_problem(messages), conv)
        return
    others = sorted(row.tainted - {"messages"})
    if row_problem is None and others:
        row_problem = f"field {others[0]!a} holds an unpaired surrogate"
    shared = {k: v for k, v in row.obj.items() if k not in ("messages", src.limits.id_field)}
    for turn, message in enumerate(messages):
        if conv is None:
            yield src.error(row.line, row_problem or "no id")
            continue
        id = f"{conv}#{turn}"
        problem = (
            row_problem
            or src.claim(id, row.line)
            or _message_problem(message, src.limits.max_chars, "messages" in row.tainted)
        )
        if problem or not isinstance(message, dict):
            yield src.error(row.line, problem or "message is not an object", id)
            continue
        role = message.get("role")
        meta = {**shared, "conversation": conv, "turn": turn}
        meta["role"] = role if isinstance(role, str) else None
        yield Document(id=id, text=message["content"], meta=meta)


def _messages_problem(messages: object) -> str:
    if messages is None:
        return "no 'messages' list"
    if messages == []:
        return "empty 'messages' list"
    return f"'messages' is not a list (got {_json_type(messages)})"


def _message_problem(message: object, max_chars: int, maybe_tainted: bool) -> str | None:
    """Why one chat message cannot become a Document, if it cannot."""
    if not isinstance(message, dict):
        return f"message is not an object (got {_json_type(message)})"
    if "content" not in message:
        return "no 'content' field"
    content = message["content"]
    if not isinstance(content, str):
        return f"'content' is not a string (got {_json_type(content)})"
    if maybe_tainted and _holds_surrogate(message):
        return "message holds an unpaired surrogate"
    return text_problem(content, max_chars)


# --- CSV ---------------------------------------------------------------------------------


class _LineTooLong(Exception):
    """Raised through csv.reader by `_CsvLines` for a physical line over the cap."""


class _CsvLines:
    """The text lines csv.reader consumes, read in binary with a cap on their length.

    Bad bytes become surrogate escapes, flagged per row later, rather than failing the
    file. An over-long line is skipped and reported by raising `_LineTooLong` through
    csv.reader, which starts a fresh record on its next call. This is a class and not a
    generator because a generator that raises is finished.
    """

    def __init__(self, stream: BinaryIO, cap: int) -> None:
        self._stream = stream
        self._cap = cap
        self._first = True

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        raw = _read_line(self._stream, self._cap)
        if raw is None:
            raise _LineTooLong
        if not raw:
            raise StopIteration
        if self._first:
            raw = raw.removeprefix(_UTF8_BOM)  # spreadsheet exports often start with one
            self._first = False
        return raw.decode("utf-8", errors="surrogateescape")


@dataclass(frozen=True, slots=True)
class _CsvHeader:
    names: list[str]
    text_col: int
    id_col: int | None


def _csv_records(stream: BinaryIO, src: _Input) -> Iterator[Record]:
    limits = src.limits
    # Process-wide setting: only ever raised, so that a text just over max_chars still
    # parses (and gets the friendly error) while a runaway quoted field stops at the limit.
    csv.field_size_limit(max(csv.field_size_limit(), limits.max_chars + 1))
    reader = csv.reader(_CsvLines(stream, limits.max_line_bytes))
    header = _csv_header(reader, src)
    if header is None:
        return
    row = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _LineTooLong:
            row += 1
            yield src.error(row, f"line longer than {limits.max_line_bytes:,} bytes")
            continue
        except csv.Error as exc:
            row += 1
            yield src.error(row, f"not valid CSV: {exc}")
            continue
        if cells:  # csv yields [] for a blank line: not a data row
            row += 1
            yield _csv_record(cells, header, row, src)


def _csv_header(reader: Iterator[list[str]], src: _Input) -> _CsvHeader | None:
    """The header row, None for an empty input; ValueError when it cannot be used."""
    try:
        names = next((cells for cells in reader if cells), None)
    except (csv.Error, _LineTooLong) as exc:
        raise ValueError(f"{src.location}: cannot read the CSV header: {exc}") from exc
    if names is None:
        return None
    if any(_SURROGATE.search(name) for name in names):
        raise ValueError(f"{src.location}: the CSV header is not UTF-8")
    text_field, id_field = src.limits.text_field, src.limits.id_field
    if text_field not in names:
        raise ValueError(
            f"{src.location}: the CSV header has no {text_field!r} column "
            f"(it has {', '.join(map(repr, names))})"
        )
    id_col = names.index(id_field) if id_field in names else None
    return _CsvHeader(names, names.index(text_field), id_col)


def _csv_record(cells: list[str], header: _CsvHeader, row: int, src: _Input) -> Record:
    if len(cells) != len(header.names):
        return src.error(row, f"row has {len(cells)} fields, the header has {len(header.names)}")
    id = src.fallback_id(row)
    if header.id_col is not None and cells[header.id_col]:
        id = cells[header.id_col]
        if _SURROGATE.search(id):
            return src.error(row, f"not UTF-8 in column {src.limits.id_field!r}")
    text = cells[header.text_col]
    problem = (
        src.claim(id, row)
        or _csv_bad_column(cells, header)
        or text_problem(text, src.limits.max_chars)
    )
    if problem:
        return src.error(row, problem, id)
    skip = (header.text_col, header.id_col)
    meta = {name: cells[i] for i, name in enumerate(header.names) if i not in skip}
    return Document(id=id, text=text, meta=meta)


def _csv_bad_column(cells: list[str], header: _CsvHeader) -> str | None:
    for name, value in zip(header.names, cells, strict=True):
        if _SURROGATE.search(value):
            return f"not UTF-8 in column {name!r}"
    return None


# --- folders -----------------------------------------------------------------------------


def _read_dir(root: Path, limits: _Limits) -> Iterator[Record]:
    for item in _walk(root, ""):
        yield item if isinstance(item, UnreadableRecord) else _file_record(*item, limits)


def _walk(folder: Path, prefix: str) -> Iterator[tuple[Path, str] | UnreadableRecord]:
    """(path, id) of every regular file, depth first in name order; hidden names skipped."""
    try:
        with os.scandir(folder) as entries:
            ordered = sorted(entries, key=lambda entry: entry.name)
    except OSError as exc:
        yield UnreadableRecord(_display(folder), None, None, f"cannot list folder: {exc.strerror}")
        return
    for entry in ordered:
        if entry.name.startswith("."):  # .git, .DS_Store, editor swap files
            continue
        rel = prefix + entry.name
        # Symlinked folders are not followed (they can loop); FIFOs and devices are not
        # regular files, and reading a FIFO would block.
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), rel + "/")
        elif entry.is_file():
            yield Path(entry.path), rel


def _file_record(path: Path, rel: str, limits: _Limits) -> Record:
    location = _display(path)
    if _SURROGATE.search(rel):
        return UnreadableRecord(location, None, None, "file name is not UTF-8")
    limit = 4 * limits.max_chars  # a character is at most 4 bytes of UTF-8
    try:
        with path.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            data = b"" if size > limit else stream.read(limit + 1)  # +1: it may have grown
    except OSError as exc:
        return UnreadableRecord(location, None, rel, f"cannot read: {exc.strerror}")
    problem = _file_problem(data, max(size, len(data)), limit)
    if problem:
        return UnreadableRecord(location, None, rel, problem)
    start = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        return UnreadableRecord(location, None, rel, f"not UTF-8 at byte {start + exc.start + 1}")
    problem = text_problem(text, limits.max_chars)
    if problem:
        return UnreadableRecord(location, None, rel, problem)
    return Document(id=rel, text=text)


def _file_problem(data: bytes, size: int, limit: int) -> str | None:
    if size > limit:
        return f"file is {size:,} bytes, over the limit of {limit:,} (4 x max_chars)"
    if b"\x00" in data:
        return "binary file (holds NUL bytes)"
    return None
