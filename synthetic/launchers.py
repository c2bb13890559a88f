"""Where a sweep's blocks of cells train: in this process ("local") or as tasks on a Ray cluster ("ray").

A block is a list of cell configs of one shape group; it trains as one batched model
(:func:`synthetic.cells.train_cells`) and comes back as one ``CellResult`` per cell. Both launchers yield
``(block index, results)`` as blocks finish, so the sweep writes each finished cell at once and an interrupted
sweep resumes from the cells on disk. The numbers do not depend on the launcher or on how cells are blocked.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator, Sequence

from mcicl.synthetic.cells import CellResult, StopRule, sweep_cells, train_cells
from mcicl.synthetic.config import LAUNCHERS, SyntheticConfig

log = logging.getLogger("mcicl")


def check_launcher(name: str, address: str | None = None) -> None:
    """Raise a ValueError naming the problem if ``name`` (and ``address``) cannot run here."""
    if name not in LAUNCHERS:
        raise ValueError(f"launcher {name!r}; accepted: {', '.join(map(repr, LAUNCHERS))}")
    if address is not None and name != "ray":
        raise ValueError(f"address {address!r} is for the ray launcher; accepted with launcher {name!r}: no address")
    if name == "ray" and importlib.util.find_spec("ray") is None:
        raise ValueError("launcher 'ray' needs the package ray: pip install 'mcicl[distributed]' (or pip install ray)")


def run_blocks(blocks: Sequence[Sequence[SyntheticConfig]], launcher: str = "local", *, device: str = "cpu",
               address: str | None = None, num_cpus: int | None = None,
               stop: StopRule | None = None) -> Iterator[tuple[int, list[CellResult]]]:
    """Train every block; yield (block index, one CellResult per cell) in the order blocks finish.

    ``stop``: train each cell to this rule (:func:`synthetic.cells.sweep_cells`); None: ``train_cells``, the rows
    ``synthetic train`` writes.

    ``address``: a Ray cluster to join (e.g. ``ray://head:10001`` or ``auto``); without it a local Ray
    instance is started with ``num_cpus`` CPUs and shut down at the end.
    """
    check_launcher(launcher, address)
    if launcher == "local":
        for i, block in enumerate(blocks):
            yield i, (train_cells(block, device) if stop is None else sweep_cells(block, stop, device))
        return
    yield from _ray_blocks(blocks, device, address, num_cpus, stop)


def _ray_blocks(blocks: Sequence[Sequence[SyntheticConfig]], device: str, address: str | None,
                num_cpus: int | None, stop: StopRule | None = None) -> Iterator[tuple[int, list[CellResult]]]:
    import ray  # deferred: optional heavy dependency (mcicl[distributed]), only for --launcher ray

    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    gpus = 1 if device.startswith("cuda") else 0
    if stop is None:
        task = ray.remote(num_cpus=1, num_gpus=gpus)(train_cells)
        refs = {task.remote(list(block), device): i for i, block in enumerate(blocks)}
    else:
        task = ray.remote(num_cpus=1, num_gpus=gpus)(sweep_cells)
        refs = {task.remote(list(block), stop, device): i for i, block in enumerate(blocks)}
    pending = list(refs)
    log.info("ray: %d block(s) sent to %s", len(refs), address or "a local Ray instance")
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield refs[ref], ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
