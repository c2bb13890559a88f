"""Mutation testing of the synthetic model, metrics and data sampler (a script, not a test).

Run ``python benchmarks/mutation_synthetic.py [--max-children N]`` (needs the ``mutation`` extra: mutmut).

mutmut names mutants after the file path, so it needs the import path to equal the file path; mcicl maps its
root folders into one ``mcicl`` namespace (setuptools package-dir), so this script lays out a staging copy
``<tmp>/mcicl/{core,synthetic,probing,analysis}`` plus ``tests/``, mutates ``mcicl/synthetic/{model,metrics,
data}.py`` there with the fast pinning tests (``tests/test_synthetic_model.py``, ``tests/test_synthetic_data.py``,
the no-training tests of ``tests/test_synthetic.py`` and the context-feature test), and prints the killed share and
every surviving mutant with its diff.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTATED = ["mcicl/synthetic/model.py", "mcicl/synthetic/metrics.py", "mcicl/synthetic/data.py"]
FAST_TESTS = ["tests/test_synthetic_model.py", "tests/test_synthetic_data.py",
              "tests/test_contexts_synthetic.py::test_context_feature_adds_gamma_along_the_selected_concept",
              "tests/test_synthetic.py::test_sampled_words_have_configured_geometry",
              "tests/test_synthetic.py::test_prompts_follow_the_spec",
              "tests/test_synthetic.py::test_gradients_match_finite_differences",
              "tests/test_synthetic.py::test_zero_query_matrix_gives_uniform_attention",
              "tests/test_synthetic.py::test_bad_configs_are_clear_errors"]


def stage(root: Path, mutated: list[str] = MUTATED, tests: list[str] = FAST_TESTS) -> None:
    """Copy the package under its import names, the tests, and a pyproject with the mutmut settings."""
    for src, dst in (("mcicl", "mcicl"), ("synthetic", "mcicl/synthetic"), ("probing", "mcicl/probing"),
                     ("analysis", "mcicl/analysis")):
        shutil.copytree(REPO / src, root / dst, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "tests", root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    # The real-model fixtures need transformers; the synthetic tests use none of them (a machine without it works).
    conftest = root / "tests" / "conftest.py"
    line = "from mcicl.probing.models import default_model_path, load_model\n"
    conftest.write_text(conftest.read_text().replace(
        line, "try:\n    " + line + "except ImportError:  # staging only: no transformers\n    pass\n"))
    selection = ", ".join(f'"{t}"' for t in tests)
    (root / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        f"source_paths = [{', '.join(repr(p) for p in mutated)}]\n"
        'also_copy = ["mcicl", "tests"]\n'
        f"pytest_add_cli_args_test_selection = [{selection}]\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-n", "0", "-q"]\n'
        'process_isolation = "forkserver"\n'
        "\n[tool.pytest.ini_options]\n"
        'markers = ["slow: trains or loads real models"]\n'.replace("'", '"'))


def main() -> int:
    """Stage, run mutmut, print the killed share and the survivors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutant workers")
    parser.add_argument("--keep", help="stage into this folder (kept) instead of a temporary one")
    parser.add_argument("--files", nargs="+", default=MUTATED, help=f"files to mutate (default: {' '.join(MUTATED)})")
    parser.add_argument("--tests", nargs="+", default=FAST_TESTS, help="pytest selection (default: the fast tests)")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mcicl_mutation_"))
    root.mkdir(parents=True, exist_ok=True)
    stage(root, args.files, args.tests)
    mutmut = [sys.executable, "-m", "mutmut"]
    subprocess.run([*mutmut, "run", "--max-children", str(args.max_children)], cwd=root, check=False)
    out = subprocess.run([*mutmut, "results", "--all", "true"], cwd=root, capture_output=True, text=True).stdout
    statuses = [line.rsplit(":", 1) for line in out.splitlines() if ":" in line]
    counts: dict[str, int] = {}
    for _, status in statuses:
        counts[status.strip()] = counts.get(status.strip(), 0) + 1
    total = sum(counts.values())
    killed = counts.get("killed", 0) + counts.get("caught by type check", 0)
    print(f"mutants: {total}; by status: {counts}")
    if total:
        print(f"killed share: {killed / total:.3f} ({killed}/{total})")
    for name, status in statuses:
        if status.strip() == "survived":
            diff = subprocess.run([*mutmut, "show", name.strip()], cwd=root, capture_output=True, text=True).stdout
            print(f"\n--- survivor {name.strip()}\n{diff}")
    print(f"\nstaging folder: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
