"""One vocabulary for nulls: every registered job's null count is ``permutations`` and its interval count
``bootstrap``, declared by mcicl.core.resampling (the same help pattern) and checked with the same error."""

from __future__ import annotations

import dataclasses

import pytest

from mcicl.app import registry
from mcicl.core.configuration import ConfigError
from mcicl.core.options import HELP

NULL_WORDS = ("permutation", "shuffle", "rotation", "boot", "resample", "n_perm", "n_boot")


def _configs():
    return [j.config for j in registry.jobs() if j.config is not None]


def test_no_other_name_for_a_null_count():
    for cls in _configs():
        for f in dataclasses.fields(cls):
            if any(w in f.name for w in NULL_WORDS) and f.name not in ("permutations", "bootstrap", "shuffles"):
                pytest.fail(f"{cls.__name__}.{f.name}: a null or interval count under another name")


@pytest.mark.parametrize("cls", [c for c in _configs() if any(f.name == "permutations" for f in dataclasses.fields(c))],
                         ids=lambda c: c.__name__)
def test_permutations_share_help_and_check(cls):
    field = next(f for f in dataclasses.fields(cls) if f.name == "permutations")
    assert "the smallest p is 1/(permutations+1)" in field.metadata.get(HELP, ""), cls.__name__
    with pytest.raises(ConfigError) as err:
        cls(permutations=0)
    assert err.value.field == "permutations" and "an integer from" in err.value.accepted


@pytest.mark.parametrize("cls", [c for c in _configs() if any(f.name == "bootstrap" for f in dataclasses.fields(c))],
                         ids=lambda c: c.__name__)
def test_bootstrap_names_its_unit_and_refuses_a_negative_count(cls):
    field = next(f for f in dataclasses.fields(cls) if f.name == "bootstrap")
    help_text = field.metadata.get(HELP, "")
    assert help_text.startswith("bootstrap resamples (") or "bootstrap" in help_text, (cls.__name__, help_text)
    with pytest.raises(ConfigError) as err:
        cls(bootstrap=-1)
    assert err.value.field == "bootstrap"
