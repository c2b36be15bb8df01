"""Whether a text can be screened at all: one check, one wording, one default limit.

Used by the input readers (a bad record becomes an unreadable-record row) and by
`Firewall.screen_batch` (a caller of the library API gets an error verdict), so the same
text is refused for the same reason whichever way it came in.
"""

from __future__ import annotations

# About 250k tokens. config.toml's [limits] max_chars documents it; LimitSettings and the
# readers take their default from here.
DEFAULT_MAX_CHARS = 1_000_000


def text_problem(text: object, max_chars: int) -> str | None:
    """Why `text` cannot be screened (not a string, empty, over `max_chars`), else None."""
    if not isinstance(text, str):
        return f"text must be a string, got {type(text).__name__}"
    if not text.strip():
        return "empty text"
    if len(text) > max_chars:
        return f"text has {len(text):,} characters; limits.max_chars is {max_chars:,}"
    return None
