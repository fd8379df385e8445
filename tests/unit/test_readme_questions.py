"""Every ```sql block of the README's "Questions you can ask" runs against a real store with
finished offline runs and answers with the columns of the sample table printed under it.

The store holds the offline demo (the LLM team on the scripted model: model calls, tool
calls, a QA rejection, merges) and a run in which a task runs out of retries, waits for a
human and is retried with guidance. ``python tests/unit/test_readme_questions.py`` prints
the sample tables the README shows, from a fresh store."""

import re
import sys
import time
from pathlib import Path

import pytest

import agentorch_nb as ao
from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Questions you can ask"


def questions(text: str | None = None) -> list[tuple[str, str, list[str]]]:
    """(question, sql, columns of the sample table under it) for each ```sql block of the
    section."""
    text = text if text is not None else README.read_text()
    start = text.index(SECTION)
    end = re.compile(r"^#{2,3} ", re.M).search(text, start + len(SECTION))
    section = text[start:end.start() if end else len(text)]
    found = []
    for m in re.finditer(r"\*\*(.+?)\*\*\s*\n+```sql\n(.*?)```\n+(\|.*?)\n", section, re.S):
        columns = [c.strip() for c in m.group(3).strip().strip("|").split("|")]
        found.append((m.group(1), m.group(2), columns))
    return found


def build_store(workspace: Path) -> ao.Orchestrator:
    from agentorch_nb.agents import LLMTeam, demo_models
    from agentorch_nb.testing import DEMO_OBJECTIVE

    ao.init_workspace(workspace)
    store = workspace / ".agentorch" / "agentorch.duckdb"
    demo = ao.Orchestrator(workspace, store=store, agents=LLMTeam(),
                           config=ao.Config(max_concurrent_workers=5, models=demo_models()))
    assert demo.start(DEMO_OBJECTIVE).wait_sync(timeout=240).value == "completed"

    def fail(task, ctx):
        if task.title.startswith("Migrate") and not ctx.guidance:
            return "the old config.ini is no longer read"
        return None

    specs = [ao.TaskSpec("Migrate the settings to TOML", key="m", max_retries=1),
             ao.TaskSpec("Document the TOML settings", key="d", depends_on=["m"])]
    orch = ao.Orchestrator(workspace, store=store, agents=Agents(
        TestDirector(specs), TestWorker(latency=0.2, fail=fail), TestStrategist()))
    run = orch.start("Move the settings to TOML")
    assert run.wait_sync(timeout=60).value == "paused"
    time.sleep(1.5)  # a person reads the escalation
    run.resolve("t1", "retry", guidance="keep reading config.ini when there is no TOML file",
                source="widget")
    assert run.wait_sync(timeout=60).value == "completed"
    return orch


@pytest.fixture(scope="module")
def orch(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("readme") / "ws")


def test_the_section_asks_at_least_five_questions():
    found = questions()
    assert len(found) >= 5
    text = " ".join(sql for _, sql, _ in found)
    for view in ("task_timeline", "attempt_outcomes", "llm_costs", "tool_stats", "human_waits",
                 "critical_path", "merge_log"):
        assert view in text, f"no question uses {view}"


@pytest.mark.slow
def test_every_question_answers_with_its_documented_columns(orch):
    for question, sql, columns in questions():
        answer = ao.sql(sql, store=orch.store.path)
        assert list(answer.columns) == columns, question
        assert len(answer) > 0, question


def render(frame, width: int = 60) -> str:
    def cell(v) -> str:
        s = "" if v is None or (isinstance(v, float) and v != v) else str(v)
        s = " ".join(s.split()).replace("|", "\\|")
        return s if len(s) <= width else s[: width - 1] + "…"

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.astype(object).itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":  # print the README's sample tables from a fresh store
    import tempfile

    made = build_store(Path(tempfile.mkdtemp(prefix="readme-")) / "ws")
    for question, sql, _ in questions():
        print(f"**{question}**\n")
        print(render(ao.sql(sql, store=made.store.path)))
        print()
    sys.exit(0)
