"""Notebooks shipped with the package: ``RUN_OBJECTIVE`` runs an objective as a papermill
batch job (``papermill $RUN_OBJECTIVE out.ipynb -p objective ... -p workspace ...``)."""

from pathlib import Path

RUN_OBJECTIVE = Path(__file__).with_name("run_objective.ipynb")
