"""Moved to :mod:`agentorch_nb.render` (which imports no widget library); kept so that
older imports of ``widgets._static`` still work. Import from ``agentorch_nb.render``."""

from ..render import (  # noqa: F401 - re-exported
    PALETTE,
    STATUS_ORDER,
    SVG_MAX_TASKS,
    counts_line,
    dag_svg,
    run_html,
    run_markdown,
    task_html,
    task_markdown,
)
