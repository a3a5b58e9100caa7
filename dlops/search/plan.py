"""The coarse-to-fine plan: which stage is running, what to sample next, when to zoom. Pure.

:class:`StagedPlan` is a small state machine that knows nothing of Ray or MLflow. The Ray Tune
searcher (:mod:`dlops.search.tune.searcher`) is a thin adapter around it, and the benchmarks drive it
directly with plain Python objectives. Its whole state is JSON-serialisable
(:meth:`StagedPlan.state_dict`), which is what makes ``Tuner.restore`` resume across stages.

Stage ``k`` samples ``n_trials`` configurations at random inside its box; once every trial of
stage ``k`` has ended (the stage barrier), the box of stage ``k+1`` is fitted around stage ``k``'s
best trials with :func:`dlops.search.zoom.zoom`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from dlops.search.space import Box, Constraint, Mode, Param, TrialOutcome, in_box, initial_box, sample_box
from dlops.search.zoom import ZoomRule, on_inner_edge, stage_improved, trust_box, trust_step, zoom

FINISHED = "FINISHED"

#: config keys the plan adds to every suggested configuration
STAGE_KEY = "stage"
EPOCHS_KEY = "epochs"


@dataclass(frozen=True)
class Stage:
    """One stage: how many trials, for how many epochs, sampled how.

    Attributes:
        n_trials: number of trials of this stage (>= 1).
        epochs: epochs each trial of this stage trains for (None: the trainable's default).
        method: ``random``, ``sobol`` (scrambled Sobol points; still random search) or
            ``anchored`` (random in the box, each coordinate kept at the best trial's value with
            probability ``1 - perturb``; see :func:`dlops.search.space.sample_box`) or ``gp``
            (Gaussian-process Thompson sampling inside the box, fitted on every ended trial so
            far: :mod:`dlops.search.model`; each trial is placed when it is asked for, so the
            trials of the stage still run in parallel; while fewer than 2 ended trials are
            feasible, e.g. at the start of a first stage or after failed or infeasible trials,
            a trial takes its point of the stage's Sobol sequence instead).
        tiers: highest priority tier tuned in this stage (``tiers`` strategy); parameters of a
            higher tier are held at their default. None: all tiers.
        perturb: per-coordinate probability of drawing a coordinate (``anchored`` only).
    """

    n_trials: int
    epochs: int | None = None
    method: Literal["random", "sobol", "anchored", "gp"] = "random"
    tiers: int | None = None
    perturb: float = 0.5


class StagedPlan:
    """Coarse-to-fine search over ``stages``, one stage after the other.

    Args:
        params: the search space.
        stages: the stages, in order.
        metric, mode: the optimizing metric and ``min``/``max``.
        constraints: satisficing constraints; a trial that breaks one is never "best".
        rule: the zoom rule.
        seed: the seed of the only random generator (same seed, same configs).

    Raises:
        ValueError: no stage, a stage with ``n_trials < 1``, an unknown mode.
    """

    def __init__(
        self,
        params: Sequence[Param],
        stages: Sequence[Stage],
        metric: str,
        mode: Mode,
        constraints: Sequence[Constraint] = (),
        rule: ZoomRule = ZoomRule(),
        seed: int = 0,
    ) -> None:
        if not stages:
            raise ValueError("search.stages: at least one stage is needed")
        for i, s in enumerate(stages):
            if s.n_trials < 1:
                raise ValueError(f"search.stages[{i}].trials must be >= 1, got {s.n_trials}")
        if mode not in ("min", "max"):
            raise ValueError(f"search.mode must be 'min' or 'max', got {mode!r}")
        self.params = list(params)
        self.stages = list(stages)
        self.metric = metric
        self.mode: Mode = mode
        self.constraints = list(constraints)
        self.rule = rule
        self.seed = seed
        self.original = initial_box(self.params)
        self.boxes: list[Box] = [self.original]
        self.stage = 0
        self.suggested: dict[str, dict[str, Any]] = {}  # trial key -> config
        self.trial_stage: dict[str, int] = {}
        self.results: dict[str, dict[str, Any]] = {}  # trial key -> final metrics ({} if failed)
        self.zoom_log: list[dict[str, Any]] = []  # per finished stage: selected, edges, reason
        self._pending: list[dict[str, Any]] = []
        self._draws = 0
        self.trust_width = 1.0  # kind="trust": the box width, a fraction of the original width
        self.restart_stage = 0  # kind="trust": centres use the trials of this stage on
        self._posterior: tuple[tuple[int, int], Any] | None = None  # gp stages: ((stage, ended), fit)
        # per stage: trials issued and trials ended, kept with `trial_stage` and `results` so a
        # suggestion is O(1), not a scan of every trial (Tune asks again at each step of a barrier)
        self._issued: Counter[int] = Counter()
        self._ended: Counter[int] = Counter()

    # ---- the loop -------------------------------------------------------------------------

    @property
    def total_trials(self) -> int:
        return sum(s.n_trials for s in self.stages)

    def _stage_keys(self, k: int) -> list[str]:
        return [t for t, s in self.trial_stage.items() if s == k]

    def _recount(self) -> None:
        self._issued = Counter(self.trial_stage.values())
        self._ended = Counter(s for t, s in self.trial_stage.items() if t in self.results)

    def _fixed(self, k: int) -> dict[str, Any]:
        tiers = self.stages[k].tiers
        if tiers is None:
            return {}
        return {p.name: _default(p) for p in self.params if p.tier > tiers and p.scale != "const"}

    def _fill(self, k: int) -> None:
        rng = np.random.default_rng([self.seed, k])
        st = self.stages[k]
        n_explore = int(self.rule.explore * st.n_trials) if k > 0 and self.boxes[k] != self.original else 0
        method = "sobol" if st.method == "gp" else st.method  # gp: its points before there is a model
        self._pending = sample_box(
            self.params, self.boxes[k], st.n_trials - n_explore, rng, method, self._fixed(k), st.perturb
        )
        if n_explore:  # the exploration share: drawn in the original box (own stream: same zoomed draws)
            rng_x = np.random.default_rng([self.seed, k, 1])
            self._pending += sample_box(self.params, self.original, n_explore, rng_x, "random", self._fixed(k))

    def suggest(self, key: str) -> dict[str, Any] | str | None:
        """Next configuration for trial ``key``; ``None`` at a stage barrier; ``FINISHED`` at the end.

        The returned dict holds the hyperparameters plus ``stage`` (0-based) and ``epochs``
        (when the stage sets it).
        """
        if key in self.suggested:
            return dict(self.suggested[key])
        while True:
            if self.stage >= len(self.stages):
                return FINISHED
            issued = self._issued[self.stage]
            if issued < self.stages[self.stage].n_trials:
                break
            if not self._stage_done(self.stage):
                return None  # barrier: wait for this stage's trials
            self._advance()
        gp = self.stages[self.stage].method == "gp"
        cfg = self._model_point(issued) if gp and not self._pending else None
        if cfg is None:
            if not self._pending:
                self._fill(self.stage)
                self._pending = self._pending[issued:]
                if gp:  # too few ended trials to model yet: this trial's Sobol point, then ask the model again
                    self._pending = self._pending[:1]
            cfg = self._pending.pop(0)
        cfg[STAGE_KEY] = self.stage
        if self.stages[self.stage].epochs is not None:
            cfg[EPOCHS_KEY] = self.stages[self.stage].epochs
        self.suggested[key] = cfg
        self.trial_stage[key] = self.stage
        self._issued[self.stage] += 1
        return dict(cfg)

    def _model_point(self, index: int) -> dict[str, Any] | None:
        """The ``index``-th trial of a ``gp`` stage: one Thompson draw of the GP fitted on every
        ended trial so far (None: too few to model). The posterior is refitted only when a trial
        has ended since the last draw; each draw has its own stream ``[seed, stage, index]``, so
        the same ended trials give the same configs (a resumed search repeats them)."""
        from dlops.search.model import fit_posterior

        k = self.stage
        done = self.outcomes()
        key = (k, len(done))
        if self._posterior is None or self._posterior[0] != key:
            rng = np.random.default_rng([self.seed, k, len(done), 2])
            post = fit_posterior(self.params, self.boxes[k], self.original, done, self.metric, self.mode, rng,
                                 self.constraints, self._fixed(k))
            self._posterior = (key, post)
        post = self._posterior[1]
        if post is None:
            return None
        cfg = post.draw(np.random.default_rng([self.seed, k, index, 3]))
        return {**cfg, **self._fixed(k)}

    def _stage_done(self, k: int) -> bool:
        return self._issued[k] >= self.stages[k].n_trials and self._ended[k] >= self._issued[k]

    def outcomes(self, k: int | None = None) -> list[TrialOutcome]:
        """Ended trials (of stage ``k``, or all), in the order they were suggested."""
        keys = [t for t in self.suggested if (k is None or self.trial_stage[t] == k) and t in self.results]
        return [TrialOutcome(t, self.suggested[t], self.results[t]) for t in keys]

    def _advance(self) -> None:
        k = self.stage
        if k + 1 < len(self.stages):
            old = self.boxes[k]
            # parameters held at their default in this stage (tiers) were not searched: their
            # interval and choices are carried over, not zoomed around the default
            held = set(self._fixed(k))
            tuned = [p for p in self.params if p.name not in held]
            trials = self.outcomes(k)
            if self.rule.kind == "trust":
                self.boxes.append(self._trust_advance(k, tuned, old))
                self.stage = k + 1
                self._pending = []
                return
            if self.rule.use_history:
                mine = set(self._stage_keys(k))
                trials = [t for t in self.outcomes() if t.trial_id in mine or in_box(tuned, old, t.config)]
            res = zoom(tuned, old, self.original, trials, self.metric, self.mode, self.constraints, self.rule)
            intervals = {**old.intervals, **res.box.intervals}
            choices = {**old.choices, **res.box.choices}
            if self.rule.keep_choices and k + 2 < len(self.stages):
                choices = dict(old.choices)  # not the last stage yet: every choice stays open
            anchor = {**old.anchor, **res.box.anchor}
            self.boxes.append(Box(intervals, choices, anchor))
            self.zoom_log.append(
                {"stage": k, "selected": list(res.selected), "edges": list(res.edges), "reason": res.reason}
            )
        self.stage = k + 1
        self._pending = []

    def _stage_best(self, trials: Sequence[TrialOutcome]) -> float | None:
        from dlops.search.space import select_top

        top = select_top(trials, self.metric, self.mode, self.constraints, k=1)
        return float(top[0].metrics[self.metric]) if top else None

    def _trust_advance(self, k: int, tuned: Sequence[Param], old: Box) -> Box:
        """The trust-region step after stage ``k`` (``rule.kind == "trust"``): the next box. The first
        zoom after the global stage (the first, or the one after a restart) has width ``shrink``."""
        recent = [t for t in self.outcomes() if self.trial_stage[t.trial_id] >= self.restart_stage]
        before = [t for t in recent if self.trial_stage[t.trial_id] < k]
        improved = stage_improved(self._stage_best(before), self._stage_best(self.outcomes(k)), self.mode)
        res = zoom(tuned, self.original, self.original, recent, self.metric, self.mode, self.constraints,
                   ZoomRule(kind="shrink", top_k=self.rule.top_k, top_fraction=self.rule.top_fraction,
                            shrink=1.0, min_width=0.0, tie_break=self.rule.tie_break,
                            tie_tolerance=self.rule.tie_tolerance, rank=self.rule.rank,
                            smooth_k=self.rule.smooth_k, centre=self.rule.centre,
                            edge_tolerance=self.rule.edge_tolerance))
        best = self.suggested.get(res.selected[0]) if res.selected else None
        edge = best is not None and on_inner_edge(tuned, old, self.original, best, 0.1)
        if best is None:
            width, restarted = self.trust_width, False
        elif k == self.restart_stage:  # after the (re)started global stage: the first zoom, width `shrink`
            width, restarted = self.rule.shrink, False
        else:
            width, restarted = trust_step(self.trust_width, improved, edge, self.rule)
        self.trust_width = width
        choices = dict(self.original.choices)
        if not restarted and not (self.rule.keep_choices and k + 2 < len(self.stages)):
            choices.update(res.box.choices)
        if restarted or best is None:
            box = Box(dict(self.original.intervals), choices, {})
            if restarted:
                self.restart_stage = k + 1
        else:
            box = trust_box(self.original, res.box.anchor, width, choices)
        reason = "restart: the box got narrower than min_width" if restarted else (
            f"trust region {'grown' if improved else 'moved' if edge else 'shrunk'} to width {width:.3g}"
            if best else res.reason)
        self.zoom_log.append({"stage": k, "selected": list(res.selected), "edges": list(res.edges), "reason": reason,
                              "width": width})
        return box

    def record(self, key: str, metrics: Mapping[str, Any] | None) -> None:
        """Record the end of trial ``key`` (``metrics`` None or {} when it failed)."""
        if key not in self.suggested:
            return
        if key not in self.results:
            self._ended[self.trial_stage[key]] += 1
        self.results[key] = dict(metrics or {})

    def forget(self, key: str) -> None:
        """Drop a suggested trial that never ran (e.g. Tune discarded it): it is sampled again."""
        if key in self.suggested and key not in self.results:
            cfg = self.suggested.pop(key)
            k = self.trial_stage.pop(key, None)
            if k is not None:
                self._issued[k] -= 1
            if cfg.get(STAGE_KEY) == self.stage:
                self._pending.insert(0, {k: v for k, v in cfg.items() if k not in (STAGE_KEY, EPOCHS_KEY)})

    def best(self) -> TrialOutcome | None:
        """The best feasible trial over all stages, or None."""
        from dlops.search.space import select_top

        top = select_top(self.outcomes(), self.metric, self.mode, self.constraints, k=1, tie_break=self.rule.tie_break)
        return top[0] if top else None

    # ---- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same search (JSON-serialisable)."""
        return {
            "stage": self.stage,
            "boxes": [b.to_dict() for b in self.boxes],
            "suggested": self.suggested,
            "trial_stage": self.trial_stage,
            "results": self.results,
            "zoom_log": self.zoom_log,
            "pending": self._pending,
            "trust_width": self.trust_width,
            "restart_stage": self.restart_stage,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (same params and stages)."""
        self.stage = int(state["stage"])
        self.boxes = [Box.from_dict(b) for b in state["boxes"]]
        self.suggested = {k: dict(v) for k, v in state["suggested"].items()}
        self.trial_stage = {k: int(v) for k, v in state["trial_stage"].items()}
        self.results = {k: dict(v) for k, v in state["results"].items()}
        self.zoom_log = list(state["zoom_log"])
        self._pending = [dict(c) for c in state["pending"]]
        self.trust_width = float(state.get("trust_width", 1.0))
        self.restart_stage = int(state.get("restart_stage", 0))
        self._recount()


def stage_sizes(
    budget: int,
    concurrency: int = 1,
    dim: int = 1,
    first: float = 0.25,
    per_dim: float = 1.0,
    min_stage: int = 4,
) -> list[int]:
    """Trials per stage for a search of ``budget`` trials with ``concurrency`` trials in flight.

    The first stage takes ``ceil(first * budget)`` trials and at least ``dim + 1``; every zoom stage
    ``max(min_stage, ceil(per_dim * dim))`` trials; both are rounded up to a multiple of
    ``concurrency`` (a stage then fills whole batches: no worker idles at a barrier except in the
    last batch of the search) and capped by what is left. The remainder goes to the last stage.

    Guarantees (property-tested): the sizes sum to ``budget``; each is >= 1; every stage but the
    last is a multiple of ``concurrency`` when the budget allows it.

    Raises:
        ValueError: ``budget``, ``concurrency`` or ``dim`` < 1, ``first`` outside (0, 1].
    """
    if budget < 1 or concurrency < 1 or dim < 1:
        raise ValueError(f"budget, concurrency and dim must be >= 1, got {budget}, {concurrency}, {dim}")
    if not (0 < first <= 1):
        raise ValueError(f"first must be in (0, 1], got {first}")

    def up(n: int) -> int:
        return -(-n // concurrency) * concurrency

    n0 = min(budget, up(max(int(np.ceil(first * budget - 1e-9)), dim + 1)))
    sizes = [n0]
    step = up(max(min_stage, int(np.ceil(per_dim * dim - 1e-9)), 1))
    left = budget - n0
    while left > 0:
        s = min(step, left)
        sizes.append(s)
        left -= s
    if len(sizes) > 2 and sizes[-1] < step:  # a short tail stage cannot zoom on much: merge it
        tail = sizes.pop()
        sizes[-1] += tail
    return sizes


def _default(p: Param) -> Any:
    """The value a parameter is held at while its tier is not tuned: ``p.default``, or when that
    is None the middle of its range in the sampling scale (numeric) or its first choice."""
    if p.default is not None:
        return p.default
    if p.is_numeric:
        a, b = p.to_u(float(p.low)), p.to_u(float(p.high))  # type: ignore[arg-type]
        return p.from_u((a + b) / 2)
    if p.scale == "choice":
        return (p.choices or (None,))[0]
    return p.value




def run_plan_batched(plan: StagedPlan, objective: Any, concurrency: int, prefix: str = "t") -> int:
    """Drive ``plan`` with ask/tell batches of up to ``concurrency`` trials (a simulation of that many
    trials in flight: a batch is asked for, evaluated, then told). Returns the number of batches
    (the wall time in trial durations)."""
    i, rounds = 0, 0
    while True:
        batch: list[tuple[str, dict[str, Any]]] = []
        done = False
        while len(batch) < concurrency:
            key = f"{prefix}{i:05d}"
            cfg = plan.suggest(key)
            if cfg == FINISHED:
                done = True
                break
            if cfg is None:
                break
            batch.append((key, cfg))  # type: ignore[arg-type]
            i += 1
        if not batch:
            if done:
                return rounds
            raise RuntimeError("stage barrier reached with no trial running")
        rounds += 1
        for key, cfg in batch:
            try:
                metrics = objective(cfg)
            except Exception:
                metrics = {}
            plan.record(key, metrics)


def run_plan(plan: StagedPlan, objective: Any, prefix: str = "t") -> StagedPlan:
    """Drive ``plan`` sequentially with a plain objective ``config -> metrics dict`` (benchmarks)."""
    i = 0
    while True:
        key = f"{prefix}{i:05d}"
        cfg = plan.suggest(key)
        if cfg == FINISHED:
            return plan
        if cfg is None:  # cannot happen sequentially: every suggested trial is recorded at once
            raise RuntimeError("stage barrier reached with no trial running")
        try:
            metrics = objective(cfg)
        except Exception:
            metrics = {}
        plan.record(key, metrics)
        i += 1
