"""--revision: a Hub branch, tag or commit reaches every from_pretrained call (config, model, tokenizer), is part
of the cache key, and an unknown revision or a revision with a local folder is one clear error.

The Hub is unreachable in tests, so the Hub id ``org/tiny-lm`` is served by a tiny random-weight GPT-2 saved here:
the loaders are wrapped to record their keyword arguments and read that folder instead.
"""

from __future__ import annotations

import pytest
from huggingface_hub.errors import RevisionNotFoundError

from mcicl.app.cli import main
from mcicl.probing import models
from mcicl.probing.cache import model_fingerprint
from mcicl.probing.extract import ExtractionConfig, extract_words
from mcicl.probing.icl import run as icl_run
from mcicl.probing.icl.icl_config import IclConfig
from mcicl.probing.models import ModelNotFoundError, load_model, resolve_model
from mcicl.probing.tiny import build_tiny_model

HUB_ID = "org/tiny-lm"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_model("gpt2", tmp_path_factory.mktemp("rev") / "gpt2", hidden=16, layers=1, heads=2)


class _Recording:
    """A stand-in for an Auto* class: records each from_pretrained call, loads the tiny folder for HUB_ID."""

    def __init__(self, real, folder, calls, name):
        self.real, self.folder, self.calls, self.name = real, folder, calls, name

    def from_pretrained(self, location, *args, **kwargs):
        self.calls.append((self.name, location, dict(kwargs)))
        if location == HUB_ID:
            revision = kwargs.pop("revision", None)
            if revision == "no-such-branch":  # what transformers raises for a revision the repository lacks
                hub_err = RevisionNotFoundError.__new__(RevisionNotFoundError)  # (its __init__ wants an HTTP reply)
                Exception.__init__(hub_err, f"404 Client Error: Revision Not Found for {HUB_ID}")
                raise OSError(f"{revision} is not a valid git identifier (branch name, tag name or commit id) "
                              "that exists for this model name.") from hub_err
            location = str(self.folder)
        return self.real.from_pretrained(location, *args, **kwargs)


@pytest.fixture
def hub(monkeypatch, tiny_folder):
    calls: list[tuple[str, str, dict]] = []
    for name in ("AutoConfig", "AutoModelForCausalLM", "AutoTokenizer"):
        monkeypatch.setattr(models, name, _Recording(getattr(models, name), tiny_folder, calls, name))
    monkeypatch.setattr(icl_run, "AutoConfig", _Recording(icl_run.AutoConfig, tiny_folder, calls, "AutoConfig"))
    return calls


def test_revision_reaches_config_model_and_tokenizer(hub):
    loaded = load_model(HUB_ID, revision="step1000")
    assert loaded.ref == models.ModelRef(HUB_ID, HUB_ID, "hub", "step1000") and loaded.ref.name == f"{HUB_ID}@step1000"
    assert {name for name, _, _ in hub} == {"AutoConfig", "AutoModelForCausalLM", "AutoTokenizer"}
    assert all(loc == HUB_ID and kw["revision"] == "step1000" for _, loc, kw in hub), hub


def test_no_revision_passes_none(hub):
    load_model(HUB_ID)
    assert hub and all("revision" not in kw for _, _, kw in hub)


def test_icl_readout_choice_reads_the_revisions_config(hub):
    config = IclConfig()
    config.extraction.model, config.extraction.revision = HUB_ID, "step1000"
    assert icl_run.choose_readout(config) == "lm"
    assert hub == [("AutoConfig", HUB_ID, {"trust_remote_code": False, "local_files_only": True,
                                          "revision": "step1000"})]


def test_unknown_revision_is_one_clear_error(hub):
    with pytest.raises(ModelNotFoundError, match="has no revision 'no-such-branch' on the Hub; accepted: a branch"):
        load_model(HUB_ID, revision="no-such-branch")


def test_revision_with_a_local_folder_or_the_default_is_refused(tiny_folder):
    with pytest.raises(ModelNotFoundError, match="is the local folder .* which has one version; accepted: no "
                                                 "--revision with a local folder"):
        resolve_model(str(tiny_folder), "step1")
    with pytest.raises(ModelNotFoundError, match="the packaged default model"):
        resolve_model("default", "step1")
    assert resolve_model(str(tiny_folder)).revision is None


def test_cli_refuses_a_revision_with_a_local_folder(tiny_folder, tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_text("dog\ncat\n")
    code = main(["probe", "extract", "--model", str(tiny_folder), "--revision", "step1", "--words", str(words),
                 "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2 and "which has one version" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_revision_value_is_a_config_error():
    with pytest.raises(ValueError, match="revision"):
        ExtractionConfig(revision="step 1")


def test_two_revisions_never_share_cached_vectors(hub, tmp_path):
    """Same weights (the tiny folder serves both), different revision: different cache folders."""
    folders = []
    for revision in ("step1", "step2", "step1"):
        config = ExtractionConfig(model=HUB_ID, revision=revision, layers="last", cache_dir=str(tmp_path / "cache"))
        extract_words(["dog", "cat"], config, show_progress=False)
        folders.append(sorted(p.name for p in (tmp_path / "cache").iterdir()))
    assert len(folders[0]) == 1 and len(folders[1]) == 2 and folders[2] == folders[1]  # step1 read back
    loaded = load_model(HUB_ID, revision="step1")
    assert model_fingerprint(loaded.model, HUB_ID, "step1")["revision"] == "step1"
    assert "revision" not in model_fingerprint(loaded.model, HUB_ID)  # keys of runs without one are unchanged
