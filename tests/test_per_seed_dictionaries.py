"""``dictionary: per_seed``: every seed draws its own dictionary, and is then exactly the single-seed run of its
derived config (training, weight metrics against its own dictionary, baselines, batched sweep cells)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mcicl.core.configuration import ConfigError, from_dict
from mcicl.core.io import read_jsonl
from mcicl.core.runs import RunFolder
from mcicl.core.vectors import LabelledVectors
from mcicl.synthetic.cells import train_cells
from mcicl.synthetic.config import SyntheticConfig
from mcicl.synthetic.data import seed_configs
from mcicl.synthetic.metrics import weight_metrics
from mcicl.synthetic.train import build_world, train
from tests.test_sweep import assert_rows_equal, canonical

TINY = dict(K=2, K_irr=1, d=16, L=4, n_train=48, batch_size=16, n_test=120, n_test_ood=40, steps=20, eval_every=5,
            ood_every=10, checkpoint_every=1000, scenarios=["noise_x2", "flipped_labels"], n_features=5, seeds=3,
            dictionary="per_seed", dtype="float64")


def tiny(**kw) -> SyntheticConfig:
    return from_dict(SyntheticConfig, {**TINY, **kw})


def seed_row(value, i: int):
    """Seed i's part of a metrics row or summary block: every per-seed list cut to its i-th entry."""
    if isinstance(value, dict):
        return {k: seed_row(v, i) for k, v in value.items()}
    if isinstance(value, list):
        return [value[i]]
    return value


def run(config: SyntheticConfig, tmp_path, name: str):
    folder = RunFolder.create(tmp_path / name, "synthetic train")
    result = train(config, folder, figures=False)
    return result, read_jsonl(folder.path / "metrics.jsonl"), folder.path


def test_seed_configs_are_distinct_and_do_not_overlap_between_runs() -> None:
    seeds = [c.seed for c in seed_configs(tiny(seeds=4))]
    assert len(set(seeds)) == 4 and seeds == [c.seed for c in seed_configs(tiny(seeds=4))]
    assert seeds[:2] == [c.seed for c in seed_configs(tiny(seeds=2))]  # seed i does not depend on the seed count
    # seed + i would give run seed=1 the seeds 1, 2, 3 of run seed=0's 0, 1, 2, 3.
    assert not set(seeds) & {c.seed for c in seed_configs(tiny(seeds=4, seed=1))}
    assert all(c.seeds == 1 and c.dictionary == "shared" for c in seed_configs(tiny()))


def test_each_seed_has_its_own_dictionary_with_the_same_geometry() -> None:
    config = tiny(within_cosine=0.6)
    world = build_world(config)
    dics = world.seed_dictionaries
    assert len(dics) == 3 and world.dictionary is dics[0]
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        assert not torch.allclose(dics[i].a, dics[j].a) and not torch.allclose(dics[i].b, dics[j].b)
    for dic in dics:
        for k in range(config.K):
            plus, minus = dic.mu(k, 1), dic.mu(k, -1)
            assert float(plus @ minus / (plus.norm() * minus.norm())) == pytest.approx(0.6, abs=1e-12)
    # Each seed's prompts are drawn from its own dictionary: seed i's words equal its single-seed world's.
    for i, sub in enumerate(seed_configs(config)):
        alone = build_world(sub)
        assert torch.equal(world.train.x[i], alone.train.x[0]) and torch.equal(world.test.xq[i], alone.test.xq[0])
        assert torch.equal(dics[i].b, alone.dictionary.b)
    # Control: a shared run's seeds read one dictionary.
    shared = build_world(tiny(dictionary="shared"))
    assert shared.seed_dictionaries is None and len(shared.dictionary_groups()) == 1


def test_each_seed_trains_exactly_as_its_single_seed_run(tmp_path) -> None:
    config = tiny()
    result, rows, path = run(config, tmp_path, "per_seed")
    per_seed_numbers = set()
    for i, sub in enumerate(seed_configs(config)):
        single, single_rows, single_path = run(sub, tmp_path, f"alone{i}")
        assert_rows_equal([seed_row(r, i) for r in rows], single_rows, "float64")
        # The weight metrics are measured against the seed's own dictionary, the baselines fitted per seed.
        assert seed_row(result.summary["baselines"], i) == single.summary["baselines"]
        per_seed_numbers.add(rows[-1]["weights"]["coef_b"][i])
        for name in result.model.state_dict():
            assert torch.equal(result.model.state_dict()[name][i], single.model.state_dict()[name][0])
    assert len(per_seed_numbers) == 3  # three different runs, not one run three times
    # Exports stand for the run with seed 0's dictionary.
    exported = LabelledVectors.load(path / "dictionary.npz")
    assert np.array_equal(exported.vectors, LabelledVectors.load(tmp_path / "alone0" / "dictionary.npz").vectors)
    # Control: measuring seed 1 against seed 0's dictionary (a shared-dictionary reading) gives other numbers.
    wrong = weight_metrics(result.model, result.world.seed_dictionaries[0], result.world.train.seeds(slice(1, 2)),
                           seeds=slice(1, 2))
    assert wrong["coef_b"][0] != pytest.approx(rows[-1]["weights"]["coef_b"][1], rel=1e-3)


def test_per_seed_cells_in_a_batch_equal_their_runs_alone(tmp_path) -> None:
    # The second cell sits at instance offset 3: its weight metrics must read its own seeds and dictionaries.
    cells = [tiny(), tiny(within_cosine=0.7, lr=1.0, seed=4)]
    results = train_cells(cells)
    for i, (config, result) in enumerate(zip(cells, results, strict=True)):
        _, rows, _ = run(config, tmp_path, f"cell{i}")
        assert canonical(result.rows) == canonical(rows)


def test_unknown_dictionary_mode_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="dictionary.*'fresh'.*'shared' or 'per_seed'"):
        tiny(dictionary="fresh")
    assert replace(tiny(), dictionary="shared").dictionary == "shared"
