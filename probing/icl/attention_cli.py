"""``mcicl probe attention``: correct attention per layer and head on the ICL prompts (command line)."""

from __future__ import annotations

import argparse

from mcicl.core.cli import add_model_options, add_run_options, merge_config
from mcicl.core.runs import RunFolder
from mcicl.core.seeding import seed_everything
from mcicl.probing.icl.attention import ATTENTION_CONDITIONS, QUERY_POSITIONS, AttentionConfig, run_attention
from mcicl.probing.icl.cli import _csv, _ints


def run(args: argparse.Namespace) -> int:
    """Handler of ``mcicl probe attention``."""
    template = {k: v for k, v in (("header", args.header), ("query", args.query_template),
                                  ("label", args.label_template), ("separator", args.separator)) if v is not None}
    fields = ("suite", "polysemy", "shots", "conditions", "ways", "episodes", "queries_per_episode",
              "query_position", "top_k", "batch_size", "seed", {"permutations": "n_permutations"},
              "extraction.model", "extraction.dtype", "extraction.device")
    config = merge_config(AttentionConfig, args, fields, extra={
        "extraction.trust_remote_code": args.trust_remote_code or None, "template": template or None})
    seed_everything(config.seed)
    folder = RunFolder.create(args.out, "probe attention", overwrite=args.overwrite,
                              inputs={"--model": config.extraction.model, "--suite": config.suite,
                                      "--polysemy": config.polysemy})
    summary = run_attention(config, folder)
    for h in summary["top_heads"]:
        print(f"top head layer {h['layer']} head {h['head']}: correct attention {h['held_out_value']:.3f} "
              f"(null {h['held_out_null']:.3f}, corrected p {h['held_out_p_corrected']:.3g}; held-out episodes)")
    knock = summary.get("behaviour", {}).get("knockout")
    if knock:
        print(f"knockout of the top {knock['k']} heads: accuracy {knock['accuracy']:.3f} -> "
              f"{knock['top_k_knocked_out']:.3f} (random {knock['k']} heads: {knock['random_k_mean']:.3f})")
    print(f"output is in {folder.path}")
    return 0


def register(probe_sub: argparse._SubParsersAction) -> None:
    """Add ``mcicl probe attention``."""
    p = probe_sub.add_parser(
        "attention", help="correct attention per layer and head: the query's attention on same-concept demos",
        description="On the ICL prompts of `probe icl` (same conditions, same seeds), the attention mass from the "
                    "query position onto demonstrations whose concept matches the query's, divided by the mass on "
                    "all demonstrations, for every layer and head; word and label tokens separately. Nulls: "
                    "concepts permuted within the prompt, the same demonstration slots in prompts of other "
                    "episodes, and the queries of one episode trading concepts; p-values max-T corrected over "
                    "heads. For causal LMs, the top heads' attention "
                    "against right answers and the accuracy after knocking them out. Writes attention.csv, "
                    "prompts.csv, summary.json and figures/attention_heatmap.png, attention_top_heads.png.")
    add_model_options(p)
    g = p.add_argument_group("ICL prompts (as in `probe icl`)")
    g.add_argument("--suite", default=None,
                   help="'polysemy' (built-in concepts with polysemous words; default), 'concepts' or a concept-set "
                        "file")
    g.add_argument("--polysemy", metavar="FILE", default=None, help="polysemy JSON {word: [concept, ...]}")
    g.add_argument("--shots", type=_ints, default=None, help="numbers of demonstrations, each >= 1 (default: 2,4,8)")
    g.add_argument("--conditions", type=_csv, default=None,
                   help="comma-separated conditions (default: " + ",".join(ATTENTION_CONDITIONS) + ")")
    g.add_argument("--ways", type=int, default=None, help="concepts per task (default: 2)")
    g.add_argument("--episodes", type=int, default=None, help="episodes per condition and shots (default: 20)")
    g.add_argument("--queries-per-episode", type=int, default=None, help="queries sharing one episode (default: 4)")
    g.add_argument("--header", default=None, help="text before the demonstrations (default: none)")
    g.add_argument("--query-template", default=None, help="query line, with {word} (default: '{word} ->')")
    g.add_argument("--label-template", default=None, help="label after the query line (default: ' {label}')")
    g.add_argument("--separator", default=None, help="text after each demonstration (default: newline)")
    g = p.add_argument_group("measurement")
    g.add_argument("--query-position", choices=QUERY_POSITIONS, default=None,
                   help="where the query attends from: last (the last prompt token), word (the query word's "
                        "tokens), auto (default: last for a causal LM, word for an encoder)")
    g.add_argument("--permutations", type=int, default=None,
                   help="permutations per null (default: 1000; the smallest p is 1/(permutations+1))")
    g.add_argument("--top-k", type=int, default=None,
                   help="heads chosen on held-out episodes for the curves and the knockout (default: 3)")
    g.add_argument("--batch-size", type=int, default=None, help="prompts per forward pass (default: 16)")
    add_run_options(p)
    p.set_defaults(func=run)
