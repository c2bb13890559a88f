"""``mcicl compare``: synthetic vs real geometry side by side; optionally the OOD map and the matched world."""

from __future__ import annotations

import argparse

from mcicl.analysis.compare import load_attention_summary, real_spaces, run_compare, synthetic_spaces
from mcicl.analysis.matched import load_icl_summary
from mcicl.analysis.ood_map import read_sweep
from mcicl.core.cli import add_run_options
from mcicl.core.runs import RunFolder, require_run
from mcicl.core.seeding import seed_everything


def run(args: argparse.Namespace) -> int:
    """Build the comparison run folder; print where it is."""

    seed = args.seed or 0
    seed_everything(seed)
    if args.permutations < 1:
        raise ValueError(f"--permutations {args.permutations}; accepted: an integer >= 1")

    # Validate every input before creating the output folder and before any long computation.
    require_run(args.synthetic, "--synthetic", ["synthetic train"])
    require_run(args.real, "--real", ["probe geometry"])
    require_run(args.icl, "--icl", ["probe icl", "demo icl"])
    require_run(args.sweep, "--sweep", ["synthetic sweep"])
    real = real_spaces(args.real)
    if args.matched and args.matched_space and args.matched_space not in {s.name for s in real}:
        raise ValueError(f"--matched-space {args.matched_space!r} not found in {args.real}; accepted: "
                         + ", ".join(s.name for s in real))
    synthetic_spaces(args.synthetic, learned=False)
    load_icl_summary(args.icl)
    load_attention_summary(args.attention)
    if args.sweep is not None:
        read_sweep(args.sweep)
    out = RunFolder.create(args.out, "compare", overwrite=args.overwrite,
                           inputs={"--synthetic": args.synthetic, "--real": args.real, "--icl": args.icl,
                                   "--attention": args.attention, "--sweep": args.sweep})
    summary = run_compare(args.synthetic, args.real, out, icl_dir=args.icl, attention_dir=args.attention,
                          sweep_dir=args.sweep, matched=args.matched, matched_space=args.matched_space,
                          n_permutations=args.permutations, seed=seed, use_umap=not args.no_umap)
    print(f"compared {len(summary['spaces'])} spaces; output is in {out.path} "
          f"(comparison.csv, comparison.md, figures/)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``mcicl compare``."""

    p = sub.add_parser("compare", help="synthetic vs real concept geometry, the OOD map, the matched world",
                       description="The same statistics (within/cross-concept cosine, concept-direction |cos|, "
                                   "principal angles, polysemous sense cosines) with their nulls on the synthetic "
                                   "dictionary, sampled words, learned W_Q/W_K spaces and each real model space.")
    p.add_argument("--synthetic", required=True, metavar="RUN", help="a `mcicl synthetic train` run folder")
    p.add_argument("--real", required=True, metavar="RUN", help="a `mcicl probe geometry` run folder")
    p.add_argument("--icl", metavar="RUN", default=None,
                   help="a `mcicl probe icl` run folder: its accuracies go beside the matched world's errors")
    p.add_argument("--attention", metavar="RUN", default=None,
                   help="a `mcicl probe attention` run folder: the real model's best heads go beside the synthetic "
                        "model's correct attention (attention_compare.csv, figures/attention_compare.png)")
    p.add_argument("--sweep", metavar="RUN", default=None,
                   help="a `mcicl synthetic sweep` run over within_cosine x cross_overlap: draw the "
                        "geometry-to-OOD map with the real spaces placed on it")
    p.add_argument("--matched", action="store_true",
                   help="estimate the generator parameters from a real space's geometry and train that world")
    p.add_argument("--matched-space", default=None, metavar="NAME",
                   help="which real space the matched world copies (default: the last layer)")
    p.add_argument("--no-umap", action="store_true",
                   help="draw the embedding figures with the PCA panel only (UMAP's first run compiles for ~10 s)")
    p.add_argument("--permutations", type=int, default=100, help="permutations per null (default: 100)")
    add_run_options(p, config=False)
    p.set_defaults(func=run)
