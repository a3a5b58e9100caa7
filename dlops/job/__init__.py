"""The main job of ``dlops run``: its phases (:mod:`.phases`), what they share (:mod:`.context`),
the runner (:mod:`.run`) and the summary (:mod:`.summary`)."""

from dlops.job.context import BestModel, JobContext
from dlops.job.phases import PHASES
from dlops.job.run import run_project
from dlops.job.summary import RunSummary, format_summary

__all__ = ["BestModel", "JobContext", "PHASES", "RunSummary", "format_summary", "run_project"]
