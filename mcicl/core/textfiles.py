"""Users' text files (configs, word lists, concept sets, contexts): read as UTF-8, a byte-order mark dropped,
and one clear error naming the file when the bytes are not UTF-8 (a Latin-1 file, a binary file)."""

from __future__ import annotations

from pathlib import Path


class TextFileError(ValueError):
    """A user's file cannot be read as text; the message names the file, where, and what is accepted."""


def read_user_text(path: str | Path, what: str = "file") -> str:
    """The text of ``path`` decoded as UTF-8 (``utf-8-sig``: a leading BOM is not part of the first word)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise TextFileError(f"{what} {path}: byte {data[err.start]:#04x} at line {line} is not UTF-8; accepted: "
                            "UTF-8 text (re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`)") from None


def shown(text: str, limit: int = 40) -> str:
    """``repr(text)`` for an error line, cut to ``limit`` characters with the full length stated when longer."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text):,} characters)"
