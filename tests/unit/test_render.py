"""A task's or a run's static view costs no widget library: what a notebook exported to HTML,
or a plain Python session, pays for a repr."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_task_repr_imports_no_widget_library():
    code = textwrap.dedent("""
        import sys
        import agentorch_nb
        from agentorch_nb import Task, TaskStatus
        task = Task("t1", "r", "parse <args>", status=TaskStatus.WAITING_HUMAN, depends_on=["t0"])
        page, text = task._repr_html_(), task._repr_markdown_()
        assert "parse &lt;args&gt;" in page and "waiting_human" in page, page
        assert text.startswith("**t1: parse <args>**"), text
        from agentorch_nb.render import dag_svg, run_html
        assert "<svg" in run_html({"run_id": "r", "status": "paused", "objective": "o", "tasks": 1,
                                   "counts": {"waiting_human": 1}}, [task, Task("t0", "r", "a")])
        print(sorted(m for m in ("ipywidgets", "anywidget") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
