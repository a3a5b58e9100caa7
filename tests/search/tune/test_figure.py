"""search/stages.png (dlops.search.tune.figure): drawn from a plan driven by a plain objective."""

from __future__ import annotations

import math
from pathlib import Path


def _plan(second: str = "random"):
    from dlops.search.plan import Stage, StagedPlan
    from dlops.search.space import Param

    return StagedPlan([Param("lr", "log", 1e-4, 1.0), Param("momentum", "one_minus_log", 0.9, 0.999),
                       Param("bs", "choice", choices=[8, 16])], [Stage(6, method="sobol"), Stage(4, method=second)],
                      "dev/error", "min", seed=1)


def test_stages_figure_draws_every_pair_and_the_best_so_far(tmp_path: Path) -> None:
    from PIL import Image

    from dlops.search.plan import run_plan
    from dlops.search.tune.figure import stages_figure

    plan = run_plan(_plan(), lambda c: {"dev/error": (math.log10(c["lr"]) + 2) ** 2 + 0.1})
    out = stages_figure(plan, str(tmp_path / "stages.png"))
    assert out == str(tmp_path / "stages.png")
    with Image.open(out) as im:
        w, h = im.size
        colours = len(set(im.convert("RGB").getdata()))
    assert w > h > 200 and colours > 20  # one pair panel + the best-so-far panel, drawn (not blank)


def test_no_finite_trial_draws_nothing(tmp_path: Path) -> None:
    from dlops.search.plan import run_plan
    from dlops.search.tune.figure import stages_figure

    plan = run_plan(_plan(), lambda c: {"dev/error": float("nan")})
    assert stages_figure(plan, str(tmp_path / "s.png")) is None and not (tmp_path / "s.png").exists()


def test_the_title_names_each_stage_method() -> None:
    from dlops.search.tune.figure import figure_title

    assert figure_title(_plan("gp"), 10) == "coarse-to-fine search: 2 stages (sobol, gp), 10 trials (dev/error, min)"
    assert "(sobol, random)" in figure_title(_plan(), 10)
