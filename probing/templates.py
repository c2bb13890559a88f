"""The one word-template rule (torch-free), used by every template that holds a word: an extraction's context
template (``"A {word}."``) and an ICL prompt's query lines (``"{word} ->"``, ``"{context} {word} ->"``) and label
(``" {label}"``).

A template is literal text with named slots ``{name}``; each slot it needs appears exactly once and no other brace
is allowed. Why so strict: extraction finds the word by splitting the template at its slot, and the attention probe
finds the word and label by their slot's index, so a repeated slot or a stray ``{x}`` would silently move the
word (or raise a bare KeyError from ``str.format``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mcicl.core.configuration import ConfigError

WORD_SLOT = "{word}"
_SLOT = re.compile(r"\{([A-Za-z_]\w*)\}")


def check_template(text: Any, field: str = "template", slots: Sequence[str] = ("word",), example: str = "") -> str:
    """``text`` if it is a string holding each of ``slots`` exactly once and no other brace; else ConfigError
    naming ``field``, the value and what is accepted."""
    names = ", ".join("{" + s + "}" for s in slots)
    accepted = (f"a string containing {names} exactly once" + (" each" if len(slots) > 1 else "")
                + " and no other braces" + (f", e.g. {example!r}" if example else ""))
    if not isinstance(text, str):
        raise ConfigError(field, text, accepted)
    found = _SLOT.findall(text)
    stray = "{" in _SLOT.sub("", text) or "}" in _SLOT.sub("", text)
    if stray or sorted(found) != sorted(slots):
        raise ConfigError(field, text, accepted)
    return text


def fill(template: str, **values: str) -> str:
    """The template with each slot replaced (literal replacement: a value holding braces stays as it is)."""
    return _SLOT.sub(lambda m: values[m.group(1)], template)
