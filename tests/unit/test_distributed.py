"""The Ray executor's configuration, without a cluster: what it refuses, what is stored of
it, and that nothing of it imports ray before a run starts on it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import agentorch_nb as ao
from agentorch_nb.distributed import RayExecutor
from agentorch_nb.exceptions import InvalidInput


def test_importing_the_package_does_not_import_ray():
    code = ("import sys, agentorch_nb, agentorch_nb.distributed; "
            "from agentorch_nb.distributed import RayExecutor; "
            "ao = agentorch_nb; ao.Config(executor=RayExecutor('auto')); "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("kwargs, message", [
    ({"address": "http://x"}, "address must be None, 'auto', 'ray://host:port' or 'host:port'"),
    ({"placement": {"testing": {"num_cpus": 1}}}, "unknown task profile 'testing'"),
    ({"placement": {"code": {"cpus": 1}}}, "placement['code'] must be a dict of"),
    ({"placement": {"*": {"num_cpus": -1}}}, "placement['*']['num_cpus'] must be a number of at least 0"),
    ({"placement": {"test": {"resources": {"gpu_node": 0}}}}, "must map resource names to positive amounts"),
    ({"env_vars": "OPENAI_API_KEY"}, "env_vars must be a list of variable names"),
    ({"warm": -1}, "warm must be a whole number of runners"),
])
def test_bad_settings_are_refused_with_the_setting_named(kwargs, message):
    with pytest.raises(InvalidInput, match=re.escape(message)):
        RayExecutor(**kwargs)


def test_config_refuses_what_is_not_an_executor():
    with pytest.raises(InvalidInput, match="Config.executor must be None"):
        ao.Config(executor="ray")


def test_the_stored_config_names_the_executor_and_no_secret(monkeypatch):
    monkeypatch.setenv("SOME_API_KEY", "sk-very-secret")
    ex = RayExecutor("ray://head:10001", placement={"test": {"num_cpus": 4, "resources": {"big": 1}}},
                     env_vars=["SOME_API_KEY"])
    stored = ao.Config(executor=ex).to_dict()
    assert stored["executor"] == {
        "kind": "ray", "address": "ray://head:10001", "namespace": "agentorch",
        "placement": {"test": {"num_cpus": 4, "resources": {"big": 1}}},
        "env_vars": ["SOME_API_KEY"], "work_dir": None, "warm": None}
    assert "sk-very-secret" not in repr(stored)
    # The key itself travels only in the runners' runtime environment.
    assert ex.runner_env() == {"env_vars": {"SOME_API_KEY": "sk-very-secret"}}
    again = ao.Config.from_dict(stored)
    assert isinstance(again.executor, RayExecutor) and again.executor.describe() == stored["executor"]
    assert ao.Config.from_dict(ao.Config().to_dict()).executor is None


def test_placement_falls_back_to_the_catch_all_then_one_cpu():
    ex = RayExecutor(placement={"test": {"num_cpus": 2}, "*": {"num_cpus": 0.5}})
    assert ex.placement_for("test") == {"num_cpus": 2}
    assert ex.placement_for("code") == {"num_cpus": 0.5}
    assert RayExecutor().placement_for("code") == {"num_cpus": 1}
