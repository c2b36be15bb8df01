"""Every error alknet-firewall raises on purpose, under one root: `AlknetError`.

An `AlknetError` means the user can fix something (a setting, a path, a missing install,
an unreachable Redis); its message says what and how, in one line. The CLI prints it as
that one line and exits 2; any other exception is a bug and keeps its traceback.

A document that cannot be screened is not an exception for the caller: it becomes a row
whose decision is "error" (see `alknet_firewall.rows`), and its batch-mates carry on.

The classes also derive from the built-in they replaced (ValueError, RuntimeError), so
code that caught those keeps working.
"""

from __future__ import annotations


class AlknetError(Exception):
    """Something the user can fix; the message says what, in one line."""


class ConfigError(AlknetError, ValueError):
    """config.toml or an environment variable holds a value that does not validate."""


class ModelSourceError(AlknetError, RuntimeError):
    """The configured weights cannot be found or are in a format we refuse to load."""


class CodebookError(AlknetError, ValueError):
    """A codebook that cannot be used: missing, corrupt, tampered or for another model."""


class CorpusError(AlknetError, ValueError):
    """A corpus file or row is not in the expected shape."""


class InputError(AlknetError, ValueError):
    """The input to screen or enqueue cannot be opened or read at all (not one bad record)."""


class QueueUnavailable(AlknetError, RuntimeError):
    """Redis (broker or results) stayed unreachable through every retry."""


class ScreeningError(AlknetError):
    """The model raised on this document screened alone; the message says what it raised.

    Raised inside the screening service and turned into an error row there (or retried by
    the worker's task); a caller of `screen` never sees it.
    """
