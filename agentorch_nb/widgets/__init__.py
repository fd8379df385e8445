"""The notebook dashboard: widgets that show a run live and steer it.

    run                      # the last expression of a cell: the run's dashboard
    orch.dashboard()         # every run of the store, a New Run form, the human queue

Where widgets cannot render (nbconvert, GitHub, papermill output), runs and tasks fall back
to a status table and a static SVG of the DAG (:mod:`agentorch_nb.render`).
"""

from .controls import HitlPanel, RunHeader
from .dag import DagView
from .dashboard import OrchestratorDashboard, RunDashboard, dashboard_for
from .inspector import LogView, TaskInspector

__all__ = ["DagView", "HitlPanel", "LogView", "OrchestratorDashboard", "RunDashboard",
           "RunHeader", "TaskInspector", "dashboard_for"]
