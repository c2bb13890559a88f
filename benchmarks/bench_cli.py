"""How fast the command line answers: wall time of `mcicl --help` and `mcicl probe icl --help` beside
`python -c pass` (the interpreter's own start), best of 5 each, measured in one run (a ratio: machines are noisy).

    .venv/bin/python benchmarks/bench_cli.py

Goal (issue 19): `mcicl --help` under 0.5 s on 2 cores.
"""

from __future__ import annotations

import subprocess
import sys
import time


def best_of(argv: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    base = best_of([sys.executable, "-c", "pass"])
    print(f"python -c pass              {base:6.3f} s")
    for args in (["--help"], ["probe", "icl", "--help"], ["synthetic", "train", "--help"]):
        wall = best_of([sys.executable, "-m", "mcicl", *args])
        print(f"mcicl {' '.join(args):<22} {wall:6.3f} s  ({wall / base:4.1f}x python -c pass, "
              f"{wall - base:6.3f} s of mcicl)")


if __name__ == "__main__":
    main()
