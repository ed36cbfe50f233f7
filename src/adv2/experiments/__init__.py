"""Experiments: budgets, configs, the runner (sharding, resume), the run directory, the demo, the
audit and the evaluation of AID.

Within the package dependencies point one way: ``budgets``, ``rows``, ``sources``, ``targets``,
``batching`` and ``store`` → ``runner`` → ``config`` → ``demo``; ``audit`` and ``aid_eval`` stand
beside them.
"""

from adv2.experiments.budgets import BUDGETS
from adv2.experiments.demo import run_demo
from adv2.experiments.store import SUMMARY_KEYS, summarize, write_run

__all__ = ["BUDGETS", "SUMMARY_KEYS", "run_demo", "summarize", "write_run"]
