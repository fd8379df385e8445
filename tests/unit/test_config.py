"""Config refuses a wrong type or a bad value at once, naming the field, the value and what
it expects; stored configs still load."""

import dataclasses
import json
import math

import pytest

import agentorch_nb as ao
from agentorch_nb import Config, Models, RunStatus, TaskSpec


def refused(**given) -> str:
    with pytest.raises(ao.InvalidInput) as err:
        Config(**given)
    return str(err.value)


@pytest.mark.parametrize("name, bad, good", [
    ("max_concurrent_workers", "4", 4),
    ("max_concurrent_workers", 2.5, 2),
    ("max_retries", "none", 0),
    ("max_iterations_per_task", None, 3),
    ("guardian_every", [5], 5),
])
def test_whole_number_fields_refuse_other_types(name, bad, good):
    message = refused(**{name: bad})
    assert message == (f"Config.{name} must be a whole number of at least "
                       f"{0 if name == 'max_retries' else 1}, not {bad!r} (a {type(bad).__name__})")
    assert getattr(Config(**{name: good}), name) == good


@pytest.mark.parametrize("name", ["worker_timeout", "qa_timeout", "plan_timeout", "lock_timeout",
                                  "flush_interval"])
def test_seconds_fields_refuse_words(name):
    message = refused(**{name: "fast"})
    assert message.startswith(f"Config.{name} must be a finite number of seconds")
    assert message.endswith("not 'fast' (a str)")
    assert getattr(Config(**{name: 12.5}), name) == 12.5


@pytest.mark.parametrize("name", ["max_concurrent_workers", "max_retries", "guardian_every",
                                  "max_iterations_per_task", "worker_timeout", "flush_interval"])
def test_numeric_fields_refuse_booleans(name):
    # True == 1 to Python; a switch where a count or a duration belongs is a mistake.
    message = refused(**{name: True})
    assert message.startswith(f"Config.{name} must be a ") and message.endswith("not True (a bool)")
    assert getattr(Config(**{name: 1}), name) == 1


def test_a_negative_flush_interval_is_refused_and_zero_means_no_lingering():
    assert refused(flush_interval=-1) == (
        "Config.flush_interval must be a finite number of seconds, 0 or more, not -1")
    assert Config(flush_interval=0).flush_interval == 0.0


@pytest.mark.parametrize("name", ["worker_timeout", "qa_timeout", "plan_timeout", "lock_timeout"])
@pytest.mark.parametrize("bad", [0, -3.0, math.inf, math.nan])
def test_timeouts_must_be_positive_and_finite(name, bad):
    assert refused(**{name: bad}) == (
        f"Config.{name} must be a finite number of seconds, more than 0, not {bad!r}")
    assert getattr(Config(**{name: 0.5}), name) == 0.5


@pytest.mark.parametrize("name, bad, least", [("max_concurrent_workers", 0, 1), ("max_retries", -1, 0),
                                             ("guardian_every", 0, 1), ("max_iterations_per_task", -2, 1)])
def test_whole_numbers_below_their_least_value_are_refused(name, bad, least):
    assert refused(**{name: bad}) == f"Config.{name} must be a whole number of at least {least}, not {bad}"
    assert getattr(Config(**{name: least}), name) == least


@pytest.mark.parametrize("name", ["keep_failed_worktrees", "keep_worktrees", "enable_guardian"])
@pytest.mark.parametrize("bad", ["false", 1, None])
def test_switches_take_only_true_or_false(name, bad):
    # "false" is truthy: taking it would do the opposite of what was meant.
    assert refused(**{name: bad}) == (
        f"Config.{name} must be True or False, not {bad!r} (a {type(bad).__name__})")
    assert getattr(Config(**{name: True}), name) is True


def test_models_must_be_a_models_and_the_message_shows_how():
    given = {"worker_model": "openai/gpt-4o-mini"}
    message = refused(models=given)
    assert message.startswith(
        "Config.models must be an agentorch_nb.Models, not {'worker_model': 'openai/gpt-4o-mini'} (a dict)")
    assert "Config(models=Models(worker_model=" in message
    assert refused(models="openai/gpt-4o-mini").startswith(
        "Config.models must be an agentorch_nb.Models, not 'openai/gpt-4o-mini' (a str)")
    assert Config(models=Models(**given)).models.worker_model == "openai/gpt-4o-mini"


def test_ints_are_welcome_as_seconds_and_kept_as_floats():
    config = Config(worker_timeout=60, flush_interval=0)
    assert config.worker_timeout == 60.0 and isinstance(config.worker_timeout, float)
    assert json.loads(json.dumps(config.to_dict()))["worker_timeout"] == 60.0


def test_changing_a_config_with_replace_is_checked_too():
    config = Config(max_concurrent_workers=2)
    with pytest.raises(ao.InvalidInput, match=r"Config.max_concurrent_workers .* not '3' \(a str\)"):
        dataclasses.replace(config, max_concurrent_workers="3")
    assert dataclasses.replace(config, max_concurrent_workers=3).max_concurrent_workers == 3


def test_a_stored_config_loads_even_with_ints_for_seconds():
    stored = {**Config().to_dict(), "worker_timeout": 120, "qa_timeout": 5, "flush_interval": 0,
              "a_field_from_a_newer_version": "ignored"}
    config = Config.from_dict(json.loads(json.dumps(stored)))
    assert (config.worker_timeout, config.qa_timeout, config.flush_interval) == (120.0, 5.0, 0.0)
    with pytest.raises(ao.InvalidInput, match=r"Config.max_retries .* not '2' \(a str\)"):
        Config.from_dict({**stored, "max_retries": "2"})


def test_the_config_a_run_stored_reads_back_as_it_was(orch_factory):
    given = dict(max_concurrent_workers=2, worker_timeout=45, max_retries=1, keep_worktrees=True,
                 models=Models(worker_model="scripted/anything", budget_tokens=1000))
    orch = orch_factory([TaskSpec("a")], **given)
    run = orch.start("store my config")
    assert run.wait_sync(30) == RunStatus.COMPLETED
    (row,) = orch.store.rows("select config from runs where run_id = ?", [run.id])
    config = Config.from_dict(json.loads(row["config"]))
    assert config == Config(flush_interval=0.01, **given)
