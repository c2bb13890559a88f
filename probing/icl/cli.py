"""``mcicl probe icl``: concept-classification ICL probes (causal-LM label scoring or attention readout)."""

from __future__ import annotations

import argparse

from mcicl.core.cli import add_model_options, add_run_options, merge_config
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.probing.icl.run import IclConfig, run_icl
from mcicl.probing.icl.tasks import CONDITIONS


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(p) for p in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 0,1,2,4,8,16") \
            from None


def _floats(text: str) -> list[float]:
    try:
        return [float(p) for p in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0,5,20") from None


def run(args: argparse.Namespace) -> int:
    """Handler of ``mcicl probe icl``."""

    template = {k: v for k, v in (("header", args.header), ("query", args.query_template),
                                  ("label", args.label_template), ("separator", args.separator),
                                  ("context_query", args.context_query_template)) if v is not None}
    fields = ("suite", "polysemy", "readout", "shots", "conditions", "ways", "episodes", "queries_per_episode",
              "contexts", "betas", "scoring", "batch_size", "seed", "extraction.model", "extraction.dtype",
              "extraction.device", {"layer": "extraction.layers"})
    config = merge_config(IclConfig, args, fields, extra={
        "extraction.trust_remote_code": args.trust_remote_code or None, "template": template or None})
    seed_everything(config.seed)
    folder = RunFolder.create(args.out, "probe icl", overwrite=args.overwrite,
                              inputs={"--model": config.extraction.model, "--suite": config.suite,
                                      "--polysemy": config.polysemy})
    summary = run_icl(config, folder)
    acc = summary["accuracy"]
    best = max((int(s) for s in acc.get("in_distribution", {})), default=None)
    if best is not None:
        cell = acc["in_distribution"][str(best)]
        print(f"in-distribution accuracy at {best} shots: {cell['mean']:.3f} "
              f"[{cell['ci_low']:.3f}, {cell['ci_high']:.3f}] (chance {summary['chance']:.2f})")
    print(f"output is in {folder.path}")
    return 0


def register(probe_sub: argparse._SubParsersAction) -> None:
    """Add ``mcicl probe icl``."""

    p = probe_sub.add_parser(
        "icl", help="in-context concept classification: in-distribution vs OOD, polysemous queries",
        description="Concept-classification ICL probes. A causal LM is scored by the log-probability of each "
                    "candidate label (--readout lm, cached prefixes); any model, including the default encoder, "
                    "can be probed with the attention readout softmax(beta*cos(query, demo)) (--readout "
                    "attention). Writes results.csv, summary.json and figures/accuracy_vs_shots.png.")
    add_model_options(p)
    g = p.add_argument_group("ICL task")
    g.add_argument("--suite", default=None,
                   help="'polysemy' (built-in concepts with polysemous words; default), 'concepts' (built-in, "
                        "no polysemous words) or a concept-set file (the JSON/CSV of `probe geometry --concepts`)")
    g.add_argument("--polysemy", metavar="FILE", default=None, help="polysemy JSON {word: [concept, ...]}")
    g.add_argument("--readout", choices=["auto", "lm", "attention"], default=None,
                   help="lm: label log-probs of a causal LM; attention: softmax(beta*cos) readout over word "
                        "vectors; auto (default): lm for a causal LM, attention otherwise")
    g.add_argument("--shots", type=_ints, default=None, help="numbers of demonstrations (default: 0,1,2,4,8,16)")
    g.add_argument("--conditions", type=_csv, default=None,
                   help="comma-separated conditions (default: all but the in-context ones): " + ", ".join(CONDITIONS))
    g.add_argument("--contexts", default=None,
                   help="sense-tagged sentences for polysemous_in_context(_adversarial): builtin (default) or a "
                        ".csv/.json contexts file (see mcicl probe contexts)")
    g.add_argument("--ways", type=int, default=None, help="concepts per task (default: 2)")
    g.add_argument("--episodes", type=int, default=None,
                   help="episodes (one set of demonstrations each) per condition and shots (default: 25)")
    g.add_argument("--queries-per-episode", type=int, default=None, help="queries sharing one episode (default: 4)")
    g.add_argument("--header", default=None, help="text before the demonstrations (default: none)")
    g.add_argument("--query-template", default=None, help="query line, with {word} (default: '{word} ->')")
    g.add_argument("--context-query-template", default=None,
                   help="query line of a word inside a sentence, with {context} and {word} "
                        "(default: '{context} {word} ->')")
    g.add_argument("--label-template", default=None,
                   help="scored label continuation, with {label} (default: ' {label}')")
    g.add_argument("--separator", default=None, help="text after each demonstration (default: newline)")
    g = p.add_argument_group("attention readout")
    g.add_argument("--betas", type=_floats, default=None,
                   help="inverse temperatures swept; the best on held-out episodes is used "
                        "(default: 0,1,2,5,10,20,50,100)")
    g.add_argument("--layer", default=None, help="hidden layer of the word vectors (default: last)")
    g = p.add_argument_group("causal-LM scoring")
    g.add_argument("--scoring", choices=["auto", "cached", "naive"], default=None,
                   help="auto (default): cached where it is exact for this model (checked against naive on the "
                        "longest prompt), else naive; cached: each prefix once, its KV cache reused (refused where "
                        "not exact: ALiBi, sliding window); naive: one forward per label. summary.json records it")
    g.add_argument("--batch-size", type=int, default=None, help="prefixes / rows per forward pass (default: 32)")
    add_run_options(p)
    p.set_defaults(func=run, option_aliases={"layers": "--layer"})  # errors about extraction.layers name --layer
