"""Fault injection: SIGKILL a run's engine at random moments and check what it leaves.

scenario.py  the run (a repository of a few hundred files, tasks that add, modify, delete
             and edit the same lines) and the worker that really does it in git worktrees
child.py     one process that starts or resumes the run
invariants.py what must hold after every kill, read from git and the DuckDB file
harness.py   the kill loop and its figures (used by bench/faults.py and test_faults.py)
"""
