"""mcicl's front door: the main jobs as functions, each returning a result object (nothing written to disk).

    import mcicl
    run = mcicl.train_synthetic(seeds=2, steps=200)        # the paper's one-layer transformer
    model = mcicl.load_model("default")                      # all-MiniLM-L6-v2, embedded
    vecs = mcicl.extract(["dog", "cat"], model, layers="-1")   # word vectors per layer
    geo = mcicl.geometry(model, layers="0,-1")               # within/cross-concept geometry with nulls
    icl = mcicl.icl(model, shots=[0, 4], episodes=10)        # in-context-learning probe
    table = mcicl.compare(run, geo)                          # the same statistics on both worlds
    mcicl.report(["runs/demo-..."], out="runs/report")       # HTML report of saved run folders

Keyword arguments are the fields of each job's config dataclass (``SyntheticConfig``, ``ExtractionConfig``,
``GeometryConfig``, ``IclConfig``), validated the same way as the command line's ``--config`` files. Every
result has ``save(RunFolder)`` to write the run folder the command line would write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mcicl.analysis.compare import compare_spaces, synthetic_spaces_of
from mcicl.analysis.report import report_runs, reported_commands
from mcicl.app import registry
from mcicl.core.configuration import from_dict, merge, to_dict
from mcicl.core.runs import RunFolder, require_run
from mcicl.core.vectors import Space
from mcicl.probing.extract import Extraction, ExtractionConfig, extract_words
from mcicl.probing.geometry import GeometryConfig, GeometryResult, measure_geometry
from mcicl.probing.icl.episodes import EPISODE_KEYS
from mcicl.probing.icl.run import IclConfig, IclResult, icl_probe
from mcicl.probing.models import LoadedModel
from mcicl.probing.models import load_model as _load_model
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.train import TrainResult, train

__all__ = ["compare", "extract", "geometry", "icl", "load_model", "report", "train_synthetic"]

ModelSpec = str | Path | LoadedModel


def _config(cls: type, fields: dict[str, Any], base: Any = None) -> Any:
    """``cls`` from ``base`` (a config or None) updated by ``fields``, validated like a --config file."""
    return from_dict(cls, merge(to_dict(base) if base is not None else {}, fields))


def _job(cls: type, model: ModelSpec, fields: dict[str, Any]) -> tuple[Any, LoadedModel | None]:
    """(config of ``cls``, an already loaded model or None). Fields of ExtractionConfig that ``cls`` does not
    have itself (model, layers, space, template, pooling, dtype, device, ...) go into its ``extraction``."""
    own = {f.name for f in dataclasses.fields(cls)}
    extraction_fields = {f.name for f in dataclasses.fields(ExtractionConfig)}
    nested = {k: fields.pop(k) for k in list(fields) if k not in own and k in extraction_fields}
    if not isinstance(model, (str, Path, LoadedModel)):
        raise TypeError(f"model={model!r} ({type(model).__name__}); accepted: 'default', a model folder or Hub id "
                        "(str or Path), or a LoadedModel from mcicl.load_model")
    loaded = model if isinstance(model, LoadedModel) else None
    nested["model"] = loaded.ref.spec if loaded is not None else str(model)
    if cls is ExtractionConfig:
        return _config(cls, {**fields, **nested}), loaded
    return _config(cls, merge(fields, {"extraction": nested})), loaded


def _strings(value: Any, param: str, what: str) -> list[str]:
    """``value`` as a list of strings; a bare string (which would be read as its characters), a non-iterable or a
    non-string item is refused naming ``param`` and what is accepted."""
    accepted = f"a list of {what}, e.g. {param}=[...]"
    if isinstance(value, (str, bytes, Path)):
        raise TypeError(f"{param}={value!r} is a single {type(value).__name__}, not a list of {what} (it would be "
                        f"read item by item); accepted: a list of {what}, e.g. {param}=[{str(value)!r}]")
    if not isinstance(value, Iterable):
        raise TypeError(f"{param}={value!r} ({type(value).__name__}) is not a list of {what}; accepted: {accepted}")
    items = list(value)
    bad = next((v for v in items if not isinstance(v, (str, Path))), None)
    if bad is not None:
        raise TypeError(f"{param}: {bad!r} ({type(bad).__name__}) is not a string; accepted: {accepted}")
    return [str(v) for v in items]


def train_synthetic(config: SyntheticConfig | None = None, *, device: str = "cpu", **fields: Any) -> TrainResult:
    """Train the paper's one-layer transformer (``config`` and/or SyntheticConfig fields) on ``device`` ('cpu',
    'cuda', 'cuda:N'); returns a TrainResult."""
    return train(_config(SyntheticConfig, fields, config), device=device)


def load_model(spec: str | Path = "default", **kwargs: Any) -> LoadedModel:
    """Load ``default`` (the embedded MiniLM), a local folder or a Hub id; see probing.models.load_model."""
    return _load_model(spec, **kwargs)


def extract(words: Iterable[str], model: ModelSpec = "default", **fields: Any) -> Extraction:
    """Pooled vectors of ``words`` per layer (ExtractionConfig fields: space, layers, template, pooling, ...)."""
    words = _strings(words, "words", "words")
    if not words:
        raise ValueError("words=[] holds no words; accepted: a non-empty list of words, e.g. words=['dog', 'cat']")
    config, loaded = _job(ExtractionConfig, model, fields)
    return extract_words(words, config, loaded=loaded, show_progress=True)


def geometry(model: ModelSpec = "default", **fields: Any) -> GeometryResult:
    """Concept geometry per layer with nulls (GeometryConfig fields: concepts, layers, space, permutations, ...)."""
    config, loaded = _job(GeometryConfig, model, fields)
    return measure_geometry(config, loaded=loaded)


def icl(model: ModelSpec = "default", **fields: Any) -> IclResult:
    """The concept-classification ICL probe (IclConfig fields: readout, betas, ...; its prompts section's fields
    suite, shots, conditions, episodes, ... may be given flat, as here they are not deprecated)."""
    prompts = {k: fields.pop(k) for k in list(fields) if k in EPISODE_KEYS}
    if prompts:
        fields = merge(fields, {"prompts": prompts})
    config, loaded = _job(IclConfig, model, fields)
    return icl_probe(config, loaded=loaded)


def compare(*worlds: TrainResult | GeometryResult | Space, permutations: int = 100, bootstrap: int = 200,
            seed: int = 0) -> list[dict[str, Any]]:
    """The comparison table (one row per space, geometry and statistic) of synthetic runs, real-model geometry
    results and single spaces, all measured by the same engine."""
    spaces: list[Space] = []
    for world in worlds:
        if isinstance(world, TrainResult):
            spaces += synthetic_spaces_of(world)
        elif isinstance(world, GeometryResult):
            spaces += [Space(f"{world.summary['source']} {s.name}", s.concepts, "real", s.polysemy)
                       for s in world.spaces]
        elif isinstance(world, Space):
            spaces.append(world)
        else:
            raise TypeError(f"compare: got {type(world).__name__}; accepted: TrainResult (train_synthetic), "
                            "GeometryResult (geometry) or Space")
    if not spaces:
        raise ValueError("compare: no spaces given; accepted: results of train_synthetic and geometry, or Spaces")
    return compare_spaces(spaces, n_permutations=permutations, n_bootstrap=bootstrap, seed=seed)


def report(run_dirs: Sequence[str | Path], out: str | Path, *, title: str = "mcicl report",
           overwrite: bool = False) -> Path:
    """Write one self-contained HTML report (+ report.md) of saved run folders into ``out``; return its path.

    The same checks as ``mcicl report``: every run is a finished run of a reported command, and ``out`` is apart
    from every run (not one of them, inside one, or holding one), so a report never replaces its own input."""
    runs = _strings(run_dirs, "run_dirs", "run folders")
    if not runs:
        raise ValueError("run_dirs=[] holds no run folders; accepted: a list of one or more saved run folders")
    catalog = registry.report_catalog()
    for run_dir in runs:  # checked before the output folder is made, so a typo leaves nothing behind
        require_run(run_dir, "run", reported_commands(catalog))
    with RunFolder.create(out, "report", overwrite=overwrite, atomic=True,
                          inputs={f"run_dirs[{i}]": run_dir for i, run_dir in enumerate(runs)}) as run:
        return report_runs(runs, run, title=title, catalog=catalog)
