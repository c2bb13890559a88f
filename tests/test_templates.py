"""One word-template rule for every template that holds a word: extraction's context template and the ICL
prompt's lines refuse the same bad templates with the same words, and fill slots literally."""

from __future__ import annotations

import pytest

from mcicl.core.configuration import ConfigError
from mcicl.probing.extract_config import ExtractionConfig
from mcicl.probing.icl.episodes import PromptTemplate
from mcicl.probing.templates import check_template, fill

BAD = ["{word} {word}", "{wrd}", "no slot", "a {word} }", "{{word}}", "{word} {x}", "{word:>5}", "{word!r}"]


@pytest.mark.parametrize("bad", BAD)
def test_extraction_and_prompt_refuse_the_same_templates(bad):
    with pytest.raises(ConfigError, match="template") as extraction:
        ExtractionConfig(template=bad)
    with pytest.raises(ConfigError, match="query") as prompt:
        PromptTemplate(query=bad)
    for err in (extraction.value, prompt.value):
        assert err.value == bad and "exactly once and no other braces" in err.accepted


@pytest.mark.parametrize("good", ["{word}", "A {word}.", "{word} ->", "Q: {word} A:"])
def test_good_templates_pass_both(good):
    assert ExtractionConfig(template=good).template == good
    assert PromptTemplate(query=good).query_text("dog") == good.replace("{word}", "dog")


def test_several_slots_and_literal_filling():
    assert check_template("{context} {word} ->", "context_query", ("context", "word")) == "{context} {word} ->"
    with pytest.raises(ConfigError, match="context_query"):
        PromptTemplate(context_query="{word} ->")
    # A value holding braces is written as it is (str.format would have read it as a slot only in the template).
    assert fill("{word} ->", word="{x}") == "{x} ->"
    assert PromptTemplate().prefix((("a{b}", "c"),)) == "a{b} -> c\n"
