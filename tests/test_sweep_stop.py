"""Sweep cells trained to a stop rule: censored and diverged cells, steps-to-1% statistics by hand, the sequential
error's interval, the mixed-concept prompts and their same-concept attention."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from mcicl.core.runs import RunFolder
from mcicl.synthetic.cells import (
    FINAL_TEST_PURPOSE,
    TEST_BLOCK_PURPOSE,
    StopRule,
    block_generator,
    block_sizes,
    km_steps,
    sweep_cells,
    wilson,
    wilson_bounds,
)
from mcicl.synthetic.data import build_dictionary, sample_mixed_prompts, sample_prompts, train_spec
from mcicl.synthetic.metrics import same_concept_attention
from mcicl.synthetic.model import zero_one_loss
from mcicl.synthetic.sweep import run_sweep, sweep_figure
from mcicl.synthetic.train import train
from tests.test_sweep import tiny


def summaries(results) -> str:
    return json.dumps([{k: v for k, v in r.summary.items() if k not in ("seconds", "batch_cells")}
                       for r in results], sort_keys=True)


def test_cells_stop_censor_and_diverge_each_as_when_trained_alone(tmp_path) -> None:
    """One batch: a cell that reaches 1%, one that cannot within its budget (censored), one with a huge lr
    (diverged); each cell's numbers equal the cell trained alone (float64, to the last digit)."""
    # The reached cell starts from the aligned (oracle) readout: a start that reaches 1% within this tiny budget;
    # what is tested is the stop rule, not the start.
    easy = tiny(dtype="float64", within_cosine=0.2, steps=120, readout_init="aligned", m=8, lr=2.0)
    hard = tiny(dtype="float64", within_cosine=0.8, steps=120, seed=2, m=8, lr=2.0)
    blowup = tiny(dtype="float64", within_cosine=0.2, steps=120, lr=1e6, seed=3, m=8)
    results = sweep_cells([easy, hard, blowup])
    status = [r.summary["status"] for r in results]
    assert status == ["reached", "censored", "diverged"]
    reached, censored, gone = (r.summary for r in results)
    assert reached["stop_step"] < 120 and reached["steps_to_stop_error"]["censored_seeds"] == 0
    assert all(e <= 0.01 for e in results[0].rows[-1]["test"]["zero_one"])
    assert censored["stop_step"] == 120 and censored["steps_to_stop_error"]["censored_seeds"] >= 1
    assert censored["steps_to_stop_error"]["high"] is None  # '>= max_steps', not a number
    assert "final" not in gone and "per_seed" not in gone and "loss grew" in gone["diverged_reason"]
    for config, result in zip([easy, hard, blowup], results, strict=True):
        assert summaries(sweep_cells([config])) == summaries([result])
    # The table and figure say so: status column, censored share, no numbers for the diverged cell.
    run = RunFolder.create(tmp_path / "s", "synthetic sweep")
    rows = run_sweep(tiny(steps=120, m=8, readout_init="aligned"), {"within_cosine": [0.2, 0.8], "lr": [2.0, 1e6]}, run)
    by = {(r["within_cosine"], r["lr"]): r for r in rows}
    assert by[(0.2, 2.0)]["status"] == "reached" and by[(0.2, 2.0)]["steps_to_1pct"] > 0
    assert by[(0.2, 1e6)]["status"] == "diverged" and by[(0.2, 1e6)]["test_zero_one"] is None
    assert by[(0.8, 2.0)]["status"] == "censored" and by[(0.8, 2.0)]["steps_to_1pct_high_censored"] is True
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["cells"]["censored"] >= 1 and summary["cells"]["diverged"] == 2
    assert (run.path / "figures" / "sweep.png").is_file()


def hand_errors(config, model, key, prompts_per_seed, sizes) -> list[float]:
    """Errors per seed of ``model`` on the first prompts_per_seed[s] fresh test prompts of evaluation ``key``,
    drawn here block by block (block j: sizes[j] prompts) as the sweep documents it."""
    dic = build_dictionary(config)
    out = []
    for s, n in enumerate(prompts_per_seed):
        wrong, used = 0.0, 0
        for j, size in enumerate(sizes):
            if used >= n:
                break
            p = sample_prompts(dic, train_spec(config), config.seeds, size, block_generator(config.seed, key, j))
            wrong += float(zero_one_loss(model(p.x, p.y, p.xq).f, p.target)[s].sum())
            used += size
        assert used == n  # a seed's count is a whole number of blocks
        out.append(wrong / n)
    return out


def test_every_sweep_evaluation_counts_errors_on_its_own_fresh_prompts() -> None:
    """The test error of each evaluation equals, by hand, the model of that step scored on fresh blocks keyed by
    (seed, step, block): not a test set re-scored along training, so the counts of different evaluations are
    independent; the final error is measured on blocks of its own key."""
    config = tiny(dtype="float64", steps=10, eval_every=5, n_test=200, seeds=3)
    rule = StopRule(max_steps=10, block=40)
    (result,) = sweep_cells([config], rule)
    assert [r["step"] for r in result.rows] == [0, 5, 10]
    for row in result.rows:
        model = train(replace(config, steps=row["step"]), figures=False).model  # the weights at that step
        assert row["test"]["zero_one"] == pytest.approx(hand_errors(
            config, model, (TEST_BLOCK_PURPOSE, row["step"]), row["test"]["n"], [40] * 5), abs=1e-12)
    # The final error: blocks of their own key, doubling (40, 80, then the 80 left of n_test).
    assert block_sizes(40, 200, growth=2) == [40, 80, 80] and block_sizes(50, 120) == [50, 50, 20]
    final = result.summary["per_seed"]["test_zero_one"]
    model = train(config, figures=False).model
    assert final == pytest.approx(hand_errors(config, model, (FINAL_TEST_PURPOSE,), result.summary["test_prompts"],
                                              [40, 80, 80]), abs=1e-12)
    # Blocks of two evaluations, of two block indices and of two cells' seeds never coincide; a key repeats.
    dic, spec = build_dictionary(config), train_spec(config)
    xs = [sample_prompts(dic, spec, 3, 40, block_generator(seed, key, j)).x
          for seed, key, j in ((0, (TEST_BLOCK_PURPOSE, 0), 0), (0, (TEST_BLOCK_PURPOSE, 5), 0),
                               (0, (TEST_BLOCK_PURPOSE, 0), 1), (1, (TEST_BLOCK_PURPOSE, 0), 0),
                               (0, (FINAL_TEST_PURPOSE,), 0))]
    assert all(not torch.equal(xs[i], xs[k]) for i in range(5) for k in range(i))
    again = sample_prompts(dic, spec, 3, 40, block_generator(0, (TEST_BLOCK_PURPOSE, 5), 0)).x
    assert torch.equal(again, xs[1])


def test_steps_to_stop_kaplan_meier_median_and_range_by_hand() -> None:
    # Three seeds, none censored: the median is the middle value, the range min..max.
    assert km_steps([300.0, 100.0, 200.0]) == {"median": 200.0, "low": 100.0, "high": 300.0, "censored_seeds": 0,
                                                "seeds": 3}
    # One censored seed (never reached): sorted 100, 200, inf -> median 200; the upper end is '>= max' (None).
    assert km_steps([100.0, None, 200.0]) == {"median": 200.0, "low": 100.0, "high": None, "censored_seeds": 1,
                                               "seeds": 3}
    # Two of three censored: half the seeds never got there, so the median is not reached.
    assert km_steps([None, float("nan"), 120.0])["median"] is None
    # Four seeds: KM's median is the smallest step by which half (2) had reached it: the 2nd smallest.
    assert km_steps([400.0, 100.0, 200.0, None])["median"] == 200.0


def test_sequential_interval_by_hand() -> None:
    for k, n in ((3, 100), (0, 250), (40, 500)):
        ci = stats.binomtest(k, n).proportion_ci(method="wilson")
        assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    with pytest.raises(ValueError, match="stop_error"):
        StopRule(max_steps=10, error=0.0)


def test_mixed_concept_prompts_draw_demonstrations_from_two_concepts() -> None:
    config = tiny(K=3, L=6, d=24)
    dic = build_dictionary(config)
    prompts, demo = sample_mixed_prompts(dic, train_spec(config), 2, 300, torch.Generator().manual_seed(0))
    own = demo == prompts.concept[..., None]
    assert (own.sum(-1) == 3).all()  # L/2 slots each
    assert all(len(set(row.tolist())) == 2 for row in demo.flatten(0, 1))
    signs = torch.einsum("snld,kd->snlk", prompts.x - prompts.xi, dic.b[:3]).sum(-1).sign()  # +-|b| on b_k
    # both signs among the query concept's demonstrations, and labels of each demonstration's own concept
    for s in range(2):
        for i in range(300):
            assert set(signs[s, i][own[s, i]].tolist()) == {-1.0, 1.0}
    label_concept = torch.einsum("snld,kd->snlk", prompts.y, dic.c).argmax(-1)
    assert torch.equal(label_concept, demo)
    with pytest.raises(ValueError, match="L >= 2 x concepts"):
        sample_mixed_prompts(dic, train_spec(tiny(K=3, L=3, d=24, both_signs=False)), 1, 5, torch.Generator(), 2)


def test_same_concept_attention_equals_a_hand_computation() -> None:
    alpha = torch.tensor([[[0.5, 0.2, 0.2, 0.1], [0.1, 0.1, 0.4, 0.4]]])  # (S=1, n=2, L=4)
    demo = torch.tensor([[[0, 1, 0, 1], [2, 2, 0, 1]]])
    query = torch.tensor([[0, 1]])
    value, chance = same_concept_attention(alpha, demo, query)
    # prompt 1: demos 0 and 2 share concept 0 -> 0.5 + 0.2 = 0.7 (chance 2/4); prompt 2: demo 3 -> 0.4 (1/4)
    assert float(value[0]) == pytest.approx((0.7 + 0.4) / 2)
    assert float(chance[0]) == pytest.approx((0.5 + 0.25) / 2)
    # unnormalised rows are normalised first
    assert float(same_concept_attention(2 * alpha, demo, query)[0][0]) == pytest.approx(0.55)


def test_sweep_figure_marks_censored_and_diverged_cells() -> None:
    rows = [{"within_cosine": w, "lr": lr, "status": st, "max_steps": 100, "stop_error": 0.01,
             "steps_to_1pct": med, "steps_to_1pct_low": lo, "steps_to_1pct_high": hi,
             "steps_to_1pct_high_censored": cens, "test_zero_one": err, "ood.noise_x2.test_zero_one": err}
            for w, lr, st, med, lo, hi, cens, err in (
                (0.2, 1.0, "reached", 40.0, 30.0, 50.0, False, 0.005), (0.8, 1.0, "censored", None, 90.0, None, True,
                                                                         0.2),
                (0.2, 9.0, "diverged", None, None, None, None, None), (0.8, 9.0, "reached", 60.0, 60.0, 70.0, False,
                                                                        0.01))]
    fig = sweep_figure(rows, ["within_cosine", "lr"])
    hatched = [p for ax in fig.axes for p in ax.patches if p.get_hatch() == "///"]
    assert len(hatched) == 3  # the censored cell in each of the three panels
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "diverged" in texts and any(">=100" in t for t in texts) and math.isfinite(40.0)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("censored" in t for t in legend) and any("diverged" in t for t in legend)
    assert np.isfinite([0.0]).all()


def test_vectorised_wilson_bounds_equal_the_scalar_interval() -> None:
    """The sequential rule decides on all seeds at once: its bounds equal :func:`wilson` to the last bit (so the
    seeds it closes are the ones the scalar rule closed), and (0, 1) where no prompt was counted yet."""
    errors = torch.tensor([0.0, 1.0, 3.0, 40.0, 250.0, 7.0, 0.0], dtype=torch.float64)
    n = torch.tensor([50.0, 50.0, 100.0, 500.0, 250.0, 3650.0, 0.0], dtype=torch.float64)
    lo, hi = wilson_bounds(errors, n)
    for i in range(len(n)):
        assert (float(lo[i]), float(hi[i])) == wilson(float(errors[i]), float(n[i]))
    assert (float(lo[-1]), float(hi[-1])) == (0.0, 1.0)
    rng = np.random.default_rng(0)
    n = torch.tensor(rng.integers(1, 5000, 500), dtype=torch.float64)
    errors = torch.floor(n * torch.tensor(rng.random(500) ** 3))
    lo, hi = wilson_bounds(errors, n)
    assert [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)] == \
        [wilson(float(e), float(m)) for e, m in zip(errors, n, strict=True)]


def test_cells_stopping_together_get_their_own_final_evaluation() -> None:
    """Cells that stop at the same evaluation are evaluated at their stop in one batch (test blocks, OOD sets,
    mixed-concept prompts): each cell's summary equals the cell swept alone, and the cells' numbers differ (so a
    mix-up of their slices would show)."""
    cells = [tiny(dtype="float64", K=3, L=6, d=24, within_cosine=w, steps=20, seed=s, m=8, lr=2.0,
                  cooccurrence=rule, polysemy_rate=0.3)
             for w, s, rule in ((0.2, 0, "patterned"), (0.6, 4, "random"), (0.4, 7, "patterned"))]
    together = sweep_cells(cells, StopRule(max_steps=20, block=30))
    assert [r.summary["stop_step"] for r in together] == [20, 20, 20]
    for config, result in zip(cells, together, strict=True):
        assert summaries(sweep_cells([config], StopRule(max_steps=20, block=30))) == summaries([result])
    ood = [r.summary["ood"]["noise_x2"]["test_zero_one"] for r in together]
    mixed = [r.summary["mixed_concepts"]["same_concept_attention"] for r in together]
    assert len(set(ood)) == 3 and len(set(mixed)) == 3
