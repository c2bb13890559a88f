"""``mcicl probe geometry``: the command line of :mod:`probing.geometry` (config from options, run folder)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mcicl.core.cli import add_model_options, add_run_options, merge_config
from mcicl.core.runs import RunFolder
from mcicl.probing.extract import SPACES
from mcicl.probing.geometry import SIGNS, WHITEN, GeometryConfig, load_concepts, run_geometry

log = logging.getLogger("mcicl")


def config_from_args(args: argparse.Namespace) -> GeometryConfig:
    """The resolved config: defaults, then --config FILE, then command-line options."""

    fields = ("vectors", "concepts", "polysemy", "whiten", "whiten_sample", "signs", "permutations", "bootstrap",
              "shuffles", "seed", "extraction.model", "extraction.space", "extraction.layers", "extraction.pooling",
              "extraction.template", "extraction.batch_size", "extraction.dtype", "extraction.device",
              "extraction.cache_dir")
    flags = {"center": False if getattr(args, "no_center", False) else None,
             "probes": False if getattr(args, "no_probes", False) else None,
             "extraction.trust_remote_code": True if getattr(args, "trust_remote_code", False) else None}
    return merge_config(GeometryConfig, args, fields, extra=flags)


def run(args: argparse.Namespace) -> int:
    """Handler of ``mcicl probe geometry``."""
    cfg = config_from_args(args)
    # Validate the inputs before making the output folder, so a typo leaves nothing behind.
    concept_set = None
    if cfg.vectors:
        if not Path(cfg.vectors).is_file():
            raise FileNotFoundError(f"--vectors {cfg.vectors}: no such file; accepted: a .npz written by "
                                    "mcicl probe extract/geometry or mcicl synthetic (LabelledVectors)")
    else:
        concept_set = load_concepts(cfg)
    folder = RunFolder.create(args.out, "probe geometry", overwrite=args.overwrite,
                              inputs={"--model": cfg.extraction.model, "--vectors": cfg.vectors,
                                      "--concepts": cfg.concepts, "--polysemy": cfg.polysemy,
                                      "--cache-dir": cfg.extraction.cache_dir})
    summary = run_geometry(cfg, folder, quiet=args.quiet, concept_set=concept_set)
    w, c = summary["within_concept_cosine"], summary["cross_concept_cosine"]
    log.info("layer %s: within-concept cosine %.3f (null %.3f, p=%.3g), cross-concept %.3f (null %.3f, p=%.3g)",
             summary["layer"], w["value"], w["null"], w["p_value"], c["value"], c["null"], c["p_value"])
    print(f"output is in {folder.path}")
    return 0


def register(probe_sub: argparse._SubParsersAction) -> None:
    """Add ``mcicl probe geometry``."""

    p = probe_sub.add_parser(
        "geometry", help="concept geometry per layer with nulls: within/cross cosines, directions, polysemy",
        description="Measure whether words of one concept are correlated and concepts near-orthogonal, per layer "
                    "of a model (or on a saved vectors .npz such as synthetic features.npz), with permutation "
                    "and shuffled-embedding nulls, bootstrap CIs, probes and polysemy.")
    add_model_options(p)
    g = p.add_argument_group("what to measure")
    g.add_argument("--vectors", metavar="FILE.npz", default=None,
                   help="measure a saved LabelledVectors file instead of a model (e.g. synthetic features.npz; "
                        "a sibling FILE.polysemy.npz is used for polysemy)")
    g.add_argument("--concepts", default=None, help="builtin | wordnet | FILE (.json or .csv) (default: builtin)")
    g.add_argument("--polysemy", metavar="FILE", default=None,
                   help='JSON {"word": ["concept_a", "concept_b"]} merged over the set\'s own polysemy inventory')
    g.add_argument("--space", choices=SPACES, default=None,
                   help="hidden states of every layer, input-embedding rows, or unembedding rows (default: hidden)")
    g.add_argument("--layers", default=None, help="'all' or a comma list such as 0,3,-1 (default: all)")
    g.add_argument("--pooling", choices=("mean", "last"), default=None,
                   help="multi-token words: mean or last token (default: mean)")
    g.add_argument("--template", default=None, help="context template with {word}, e.g. 'A {word}.' "
                                                    "(default: the word alone)")
    g.add_argument("--batch-size", type=int, default=None, help="extraction batch size (default: 64)")
    g.add_argument("--cache-dir", default=None, help="extraction cache folder (default: no cache)")
    g = p.add_argument_group("statistics")
    g.add_argument("--whiten", choices=WHITEN, default=None,
                   help="inner product: none (centred), vocab (covariance of a vocabulary sample in the same "
                        "space), unembed (covariance of the unembedding rows, Park et al.) (default: none)")
    g.add_argument("--whiten-sample", type=int, default=None,
                   help="vocabulary words for --whiten vocab on hidden layers (default: 2000)")
    g.add_argument("--no-center", action="store_true", help="do not subtract the mean vector (raw cosines)")
    g.add_argument("--signs", choices=SIGNS, default=None,
                   help="saved vectors with signs (synthetic): align +/- words, ignore signs, or split each "
                        "concept into concept+ and concept- (default: align)")
    g.add_argument("--permutations", type=int, default=None, help="label permutations per statistic (default: 200)")
    g.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples for 95%% CIs (default: 1000)")
    g.add_argument("--shuffles", type=int, default=None, help="shuffled-embedding null draws (default: 20)")
    g.add_argument("--no-probes", action="store_true", help="skip the per-layer logistic-regression probes")
    add_run_options(p)
    p.set_defaults(func=run)
