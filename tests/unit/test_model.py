import itertools

import pytest

from agentorch_nb import InvalidTransition, TaskStatus
from agentorch_nb.model import TRANSITIONS, check_transition

S = TaskStatus
LEGAL = {
    (S.PLANNED, S.READY), (S.PLANNED, S.WAITING_HUMAN), (S.PLANNED, S.ABANDONED),
    (S.READY, S.ACTIVE), (S.READY, S.PLANNED), (S.READY, S.WAITING_HUMAN), (S.READY, S.ABANDONED),
    (S.ACTIVE, S.AWAITING_QA), (S.ACTIVE, S.FAILED), (S.ACTIVE, S.WAITING_HUMAN), (S.ACTIVE, S.ABANDONED),
    (S.AWAITING_QA, S.COMPLETE), (S.AWAITING_QA, S.FAILED), (S.AWAITING_QA, S.WAITING_HUMAN),
    (S.AWAITING_QA, S.ABANDONED),
    (S.FAILED, S.READY), (S.FAILED, S.PLANNED), (S.FAILED, S.WAITING_HUMAN), (S.FAILED, S.ABANDONED),
    (S.WAITING_HUMAN, S.READY), (S.WAITING_HUMAN, S.PLANNED), (S.WAITING_HUMAN, S.ABANDONED),
}


def test_statuses_are_the_documented_strings():
    assert [s.value for s in S] == ["planned", "ready", "active", "awaiting_qa", "complete",
                                    "failed", "waiting_human", "abandoned"]


@pytest.mark.parametrize("pair", sorted(LEGAL))
def test_legal_transition(pair):
    check_transition("t1", *pair)


@pytest.mark.parametrize("pair", sorted(set(itertools.product(S, S)) - LEGAL))
def test_illegal_transition_names_task_and_both_statuses(pair):
    with pytest.raises(InvalidTransition) as err:
        check_transition("t7", *pair)
    assert err.value.task_id == "t7"
    assert f"'{pair[0].value}'" in str(err.value) and f"'{pair[1].value}'" in str(err.value)


def test_table_matches_the_documented_lifecycle():
    assert {(a, b) for a, bs in TRANSITIONS.items() for b in bs} == LEGAL
    assert TRANSITIONS[S.COMPLETE] == frozenset() and TRANSITIONS[S.ABANDONED] == frozenset()
