"""Experiments: the demo, run directories, sampling of examples and targets."""

from adv2.experiments.demo import BUDGETS, run_demo
from adv2.experiments.store import SUMMARY_KEYS, summarize, write_run

__all__ = ["BUDGETS", "SUMMARY_KEYS", "run_demo", "summarize", "write_run"]
