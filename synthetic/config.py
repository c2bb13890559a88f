"""SyntheticConfig: every knob of the synthetic world, validated once at construction.

Defaults are the reconstruction mcicl commits to (see docs/synthetic.md); each field with a plausible
alternative is an option here rather than a constant in the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcicl.core.configuration import require
from mcicl.core.jobs import CsvTable, DemoStage, Job, Option, ReportSection
from mcicl.core.options import doc

MAX_PROMPT_GIB = 8.0  # the prompt sets of one run must fit in this (a config error otherwise, not an allocation)

# OOD scenarios: each is a test sampler evaluated along training on the same model (synthetic/data.py).
SCENARIOS = (
    "length_short",  # L/2 demonstrations
    "length_long",  # 2L demonstrations
    "length_long_4x",  # 4L demonstrations
    "skewed_concepts",  # test prior: 0.8 on concept c0
    "uniform_concepts",  # test prior uniform: the reverse shift, only with train_skew > 0 (else it is training)
    "switched_features",  # the query concept's semantic direction b_k replaced by a fresh one; labels follow it
    "switched_cooccurrence",  # co-occurring concepts and sign patterns never seen together in training
    "flipped_labels",  # demonstrations map mu^+ to q^- and mu^- to q^+; the answer follows them
    "polysemous_query",  # the query carries two task concepts at once
    "noise_x2",  # sigma * 2
    "noise_x5",  # sigma * 5
    "unseen_concept",  # fresh word and label directions never trained on (expected to fail)
    "polysemous_in_context",  # polysemous query + a context feature along the task concept's a_k*
    "polysemous_in_context_adversarial",  # ... along the other concept's a_k' instead
)
# Opt-in (scenarios=[...]): the counterpart of the real in-context ICL conditions (docs/contexts.md).
CONTEXT_SCENARIOS = ("polysemous_in_context", "polysemous_in_context_adversarial")


def default_scenarios() -> list[str]:
    """The default OOD scenarios, in display order: all but uniform_concepts (a shift only with train_skew > 0)
    and the opt-in context ones."""
    return [s for s in SCENARIOS if s != "uniform_concepts" and s not in CONTEXT_SCENARIOS]


@dataclass
class SyntheticConfig:
    """The concept-based sparse-coding prompt model, the one-layer transformer and its SGD training."""

    # --- concept dictionary (R^d) ---
    K: int = 4  # task concepts
    K_irr: int = 4  # irrelevant concepts (appear only as co-occurring features)
    d: int = 48  # ambient dimension
    within_cosine: float = 0.5  # cos(mu_k^+, mu_k^-) = (|a|^2-|b|^2)/(|a|^2+|b|^2); words have unit norm
    cross_overlap: float = 0.0  # cosine between words of different concepts (a shared component)
    label_cosine: float = 0.0  # cos(q_k^+, q_k^-) for the label features q_k^+- = c_k +- d_k
    shared_labels: bool = False  # one label pair (q^+, q^-) shared by all concepts
    # --- words and prompts ---
    polysemy_rate: float = 0.1  # probability that each other concept's feature co-occurs in a word
    cooccurrence: str = "patterned"  # "patterned": training co-occurrence follows a rule (needed by
    #   switched_features); "random": any concept with a random sign
    sigma: float = 0.03  # word noise xi ~ N(0, sigma^2 I_d)
    noise: str = "isotropic"  # "isotropic": xi ~ N(0, sigma^2 I_d); "orthogonal": xi projected off the span of
    #   every dictionary direction (xi = P_perp g), so noise never aliases a feature
    L: int = 8  # demonstrations per prompt
    both_signs: bool = True  # every prompt shows each semantic sign at least once
    label_noise: float = 0.0  # probability that the query's target sign is flipped (the Bayes error is then p)
    demo_label_noise: float = 0.0  # probability that a demonstration's label is flipped (alternative noise)
    train_skew: float = 0.0  # training prior mass on concept c0 (0 = uniform pi)
    context_strength: float = 1.0  # in-context scenarios: the context feature is context_strength * a_k
    # --- model ---
    value: str = "label"  # "label": v_l = y_l; "projected": v_l = W_V [x_l; y_l]
    m: int = 32  # ReLU neurons per sign in the MLP readout (8 with a random readout: 3 of 10 seeds end with every
    #   w_+ neuron dead on one concept's labels, test error ~0.125 at 2,000 steps; 32: 10 of 10 converge)
    sigma0: float = 0.05  # Gaussian init scale of W_Q, W_K (, W_V) and w_{+-,r}
    readout_init: str = "random"  # "random": every weight Gaussian (no ground truth enters the initialisation);
    #   "aligned" (an oracle warm start): w_+ also gets readout_align * sum_k d_k/|d_k| (the TRUE label
    #   directions), w_- minus that
    readout_align: float = 0.2  # size of that aligned component (only with readout_init: aligned)
    skip: bool = False  # add a skip path from the query to the readout: h = sum_l alpha_l v_l + W_S x_q, so the
    #   query reaches the output without attention (with value: projected the labels do too)
    demo_labels: str = "shown"  # "hidden": every demonstration's label y_l is replaced by 0 in training and
    #   evaluation (the context-blind control: the same model, trained the same way, without the labels)
    # --- training ---
    seeds: int = field(default=1, metadata=doc(  # independent models trained in one vectorized program (S)
        "independent models trained at once as a batch dimension"))
    dictionary: str = "shared"  # "shared": one dictionary drawn from `seed` for all seeds (seeds vary init,
    #   prompts and minibatches); "per_seed": seed i draws its own dictionary, prompts and init from a seed
    #   derived from (seed, i), so intervals across seeds include dictionary variation
    steps: int = field(default=400, metadata=doc("SGD steps"))
    lr: float = 8.0  # scaled with m (the readout is a mean over m neurons): 2.0 at m = 8
    batch_size: int = 64  # 0 or >= n_train means full batch
    n_train: int = 1024  # fixed training prompts (per seed)
    n_test: int = 10000  # in-distribution test prompts (per evaluation with test_prompts: fresh)
    test_prompts: str = "fresh"  # "fresh": a new, independent set of n_test prompts at every evaluation (seeded
    #   by (seed, step), so resume gives the same numbers), for independent counts in the convergence fits;
    #   "fixed": one test set re-scored at every evaluation (no draw per evaluation, but the counts along training
    #   are then correlated)
    n_test_ood: int = 2000  # test prompts per OOD scenario
    n_features: int = 100  # sampled words per (concept, sign) exported to features.npz
    scenarios: list[str] = field(default_factory=default_scenarios)
    eval_every: int = 5  # train/test metrics (fine enough to time the 10% -> 1% -> 0.1% error decay)
    ood_every: int = 25  # OOD scenario metrics (a multiple of eval_every)
    checkpoint_every: int = 100
    seed: int = 0
    dtype: str = "float32"
    threads: int = 1  # torch CPU threads while training (1 is fastest for small tensors); 0 = torch's setting

    def __post_init__(self) -> None:
        require(self.K >= 1, "K", self.K, "an integer >= 1")
        require(self.K_irr >= 0, "K_irr", self.K_irr, "an integer >= 0")
        require(0.0 <= self.within_cosine < 1.0, "within_cosine", self.within_cosine,
                "a number in [0, 1) (|a_k| >= |b_k|, and the two senses must differ)")
        require(-1.0 < self.label_cosine < 1.0, "label_cosine", self.label_cosine, "a number in (-1, 1)")
        a2 = (1 + self.within_cosine) / 2
        require(0.0 <= self.cross_overlap <= a2, "cross_overlap", self.cross_overlap,
                f"a number in [0, (1+within_cosine)/2 = {a2:g}] (the shared part lives in a_k)")
        require(self.d >= 1, "d", self.d, "an integer >= 1")
        need = self.directions_needed()
        require(self.d >= need, "d", self.d,
                f"an integer >= {need}: the orthogonal dictionary needs 2(K+K_irr) word directions, "
                f"{2 if self.shared_labels else 2 * self.K} label directions"
                + (", 1 shared direction" if self.cross_overlap > 0 else "")
                + ", 4 reserved for unseen_concept")
        require(0.0 <= self.polysemy_rate <= 1.0, "polysemy_rate", self.polysemy_rate, "a probability in [0, 1]")
        require(self.cooccurrence in ("patterned", "random"), "cooccurrence", self.cooccurrence,
                "'patterned' or 'random'")
        require(self.sigma >= 0.0, "sigma", self.sigma, "a number >= 0")
        require(self.noise in ("isotropic", "orthogonal"), "noise", self.noise, "'isotropic' or 'orthogonal'")
        require(self.L >= 1, "L", self.L, "an integer >= 1")
        require(not self.both_signs or self.L >= 2, "L", self.L, "an integer >= 2 when both_signs is true")
        require(0.0 <= self.label_noise < 0.5, "label_noise", self.label_noise, "a probability in [0, 0.5)")
        require(0.0 <= self.demo_label_noise < 0.5, "demo_label_noise", self.demo_label_noise,
                "a probability in [0, 0.5)")
        require(self.train_skew == 0.0 or 1.0 / self.K <= self.train_skew < 1.0, "train_skew", self.train_skew,
                f"0 (uniform) or a probability in [1/K = {1 / self.K:g}, 1)")
        require(self.value in ("label", "projected"), "value", self.value, "'label' or 'projected'")
        require(self.m >= 1, "m", self.m, "an integer >= 1")
        require(self.sigma0 > 0.0, "sigma0", self.sigma0, "a number > 0")
        require(self.readout_init in ("aligned", "random"), "readout_init", self.readout_init,
                "'aligned' or 'random'")
        require(self.readout_align >= 0.0, "readout_align", self.readout_align, "a number >= 0")
        require(self.demo_labels in ("shown", "hidden"), "demo_labels", self.demo_labels, "'shown' or 'hidden'")
        require(self.seeds >= 1, "seeds", self.seeds, "an integer >= 1")
        require(self.dictionary in ("shared", "per_seed"), "dictionary", self.dictionary, "'shared' or 'per_seed'")
        require(self.steps >= 0, "steps", self.steps, "an integer >= 0")
        require(self.lr > 0.0, "lr", self.lr, "a number > 0")
        require(self.batch_size >= 0, "batch_size", self.batch_size, "an integer >= 0 (0 = full batch)")
        require(self.n_train >= 1, "n_train", self.n_train, "an integer >= 1")
        require(self.n_test >= 1, "n_test", self.n_test, "an integer >= 1")
        require(self.test_prompts in ("fixed", "fresh"), "test_prompts", self.test_prompts, "'fixed' or 'fresh'")
        require(self.n_test_ood >= 1, "n_test_ood", self.n_test_ood, "an integer >= 1")
        require(self.n_features >= 1, "n_features", self.n_features, "an integer >= 1")
        for name in self.scenarios:
            require(name in SCENARIOS, "scenarios", name, "names from " + ", ".join(SCENARIOS))
        require(len(set(self.scenarios)) == len(self.scenarios), "scenarios", self.scenarios, "distinct names")
        require(not {"polysemous_query", *CONTEXT_SCENARIOS} & set(self.scenarios) or self.K >= 2, "K", self.K,
                "an integer >= 2 when a polysemous_query or polysemous_in_context scenario is on")
        require(self.context_strength >= 0.0, "context_strength", self.context_strength, "a number >= 0")
        require("uniform_concepts" not in self.scenarios or self.train_skew > 0, "scenarios", "uniform_concepts",
                "uniform_concepts only with train_skew > 0 (with a uniform training prior it is the training "
                "distribution, not a shift)")
        require("switched_features" not in self.scenarios or self.d >= need + self.K, "d", self.d,
                f"an integer >= {need + self.K} when the switched_features scenario is on "
                f"({self.K} fresh semantic directions beyond the {need} of the dictionary)")
        require(self.eval_every >= 1, "eval_every", self.eval_every, "an integer >= 1")
        require(self.ood_every >= 1 and self.ood_every % self.eval_every == 0, "ood_every", self.ood_every,
                f"a positive multiple of eval_every = {self.eval_every}")
        require(self.checkpoint_every >= 1, "checkpoint_every", self.checkpoint_every, "an integer >= 1")
        require(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        require(self.threads >= 0, "threads", self.threads, "an integer >= 0 (0 = leave torch's setting)")
        require(self.dtype in ("float32", "float64"), "dtype", self.dtype, "'float32' or 'float64'")
        gib = self.prompt_memory_bytes() / 2**30
        require(gib <= MAX_PROMPT_GIB, "seeds", self.seeds,
                f"a number of seeds whose prompt sets fit in memory: seeds x prompts x L x d needs {gib:.3g} GiB "
                f"here, the limit is {MAX_PROMPT_GIB} GiB (lower seeds, n_train, n_test, n_test_ood or d)")

    def prompt_memory_bytes(self) -> int:
        """Bytes of the prompt tensors a run holds (x, y, xi per demonstration; train, test and OOD sets)."""
        longest = {"length_long": 2, "length_long_4x": 4}
        demos = self.n_train * self.L + self.n_test * self.L + sum(
            self.n_test_ood * self.L * longest.get(name, 1) for name in self.scenarios)
        itemsize = 4 if self.dtype == "float32" else 8
        return int(self.seeds) * demos * 3 * self.d * itemsize

    def directions_needed(self) -> int:
        """How many orthonormal directions the dictionary uses (must be <= d)."""
        words = 2 * (self.K + self.K_irr)
        labels = 2 if self.shared_labels else 2 * self.K
        shared = 1 if self.cross_overlap > 0 else 0
        # The 4 unseen_concept directions are always reserved, so the dictionary (and the trained model) do not
        # depend on which scenarios are evaluated.
        return words + labels + shared + 4

    @property
    def oracle_init(self) -> bool:
        """True when ground truth (the true label directions) enters the initialisation."""
        return self.readout_init == "aligned" and self.readout_align > 0

    @property
    def full_batch(self) -> bool:
        """True when every step uses all training prompts."""
        return self.batch_size == 0 or self.batch_size >= self.n_train


# ----------------------------------------------------------------------------------------- jobs
# The command line is built from these (torch-free) declarations; the code they name is imported when it runs.

LAUNCHERS = ("local", "ray")  # where a sweep's blocks of cells train (synthetic/launchers.py)
CELLS_PER_BLOCK = 64  # cells trained as one batched model (and the unit of resume and of a Ray task)
SWEEP_SEEDS = 3  # a sweep's seeds per cell unless --seeds is given
SWEEP_MAX_STEPS = 2000  # a sweep cell's maximum of steps unless --steps is given (it stops earlier at --stop-error)

DEVICE = Option(("--device",), "where the model trains: 'cpu' (default), 'cuda' or 'cuda:N' (data are sampled on "
                "the CPU)", {"default": "cpu"})
TRAINING_FIELDS = {"training": ("seeds", "steps")}

TRAIN_JOB = Job(
    command="synthetic train",
    help="train S seeds, evaluate OOD scenarios, write metrics, checkpoints, figures",
    description="Train the one-layer transformer; writes summary.json, metrics.jsonl, checkpoints/, features.npz, "
                "dictionary.npz and figures/.",
    execute="mcicl.synthetic.train:execute_train",
    result="mcicl.synthetic.train:TrainResult",
    config=SyntheticConfig,
    fields=TRAINING_FIELDS,
    options=(DEVICE, Option(("--resume",), "continue the run in --out from its latest checkpoint (same numbers as "
                                           "uninterrupted)", {"action": "store_true"})),
    sets=True,
    report=ReportSection(
        "Synthetic world: training and OOD scenarios",
        "The synthetic world: the one-layer transformer (softmax attention + ReLU MLP, logistic loss) trained on "
        "concept-based sparse-coding prompts, evaluated in distribution and in OOD scenarios."),
    demo=DemoStage("synthetic training + OOD", "mcicl.synthetic.train:demo_stage", order=10),
)

SWEEP_JOB = Job(
    command="synthetic sweep",
    help="train over a grid of config values; table of in-distribution and OOD errors",
    description="Every grid point is a cell (--seeds seeds, default 3 here); cells of equal tensor shapes train as "
                "one batched model, each until every seed's test error is at most --stop-error or --steps (the "
                "maximum, default 2000 here) is reached: such a cell is marked censored; a cell whose loss "
                "diverges is marked diverged and reports nothing. Writes points/NNN per cell, sweep.csv (status, "
                "steps to the stop error: Kaplan-Meier median and range over seeds, errors, correct and "
                "same-concept attention, OOD errors) and a heatmap.",
    execute="mcicl.synthetic.sweep:execute_sweep",
    result="mcicl.synthetic.sweep:SweepResult",
    config=SyntheticConfig,
    fields=TRAINING_FIELDS,
    options=(
        Option(("--grid",), "FIELD=V1,V2,... joined by ';', e.g. \"within_cosine=0.1,0.4,0.7;cross_overlap=0,0.1,"
                            "0.2\"", {"default": None}),
        DEVICE,
        Option(("--resume",), "continue the sweep in --out: finished cells are kept, the others are trained",
               {"action": "store_true"}),
        Option(("--launcher",), "where blocks of cells train: 'local' (this process) or 'ray' (tasks on a Ray "
                                "cluster; needs mcicl[distributed]) (default: local)",
               {"default": "local", "choices": list(LAUNCHERS)}),
        Option(("--address",), "with --launcher ray: the cluster to join (e.g. ray://head:10001 or auto); default: "
                               "start a local Ray instance", {"default": None}),
        Option(("--cells-per-block",), "cells trained as one batched model; also the unit of resume and of a Ray "
                                       f"task (default: {CELLS_PER_BLOCK})",
               {"type": int, "default": CELLS_PER_BLOCK}),
        Option(("--stop-error",), "a cell stops when every seed's test error is at most this (default: 0.01); "
                                  "--steps is the maximum (a cell that reaches it is censored)",
               {"type": float, "default": 0.01}),
        Option(("--precision",), "half-width of the 95%% Wilson interval at which an evaluation stops adding test "
                                 "prompts (it also stops when the interval excludes --stop-error) (default: 0.005)",
               {"type": float, "default": 0.005}),
    ),
    sets=True,
    report=ReportSection(
        "Synthetic sweep", "A sweep of the synthetic world over generator parameters: in-distribution and OOD errors.",
        csv_tables=(CsvTable("sweep.csv", "Sweep results", "One row per grid point."),)),
)

PLOT_JOB = Job(
    command="synthetic plot",
    help="re-draw a train run's figures from its saved metrics (no training)",
    description="Re-draw the figures of a synthetic train run from its metrics.jsonl and summary.json into its "
                "figures/ (no training).",
    execute="mcicl.synthetic.plots:execute_plot",
    result="mcicl.synthetic.plots:PlotResult",
    config=None,
    options=(Option(("run",), "a synthetic train run folder"),),
    run_folder=False, seed=False, config_file=False,
)
