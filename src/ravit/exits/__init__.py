"""The early-exit decision: pure functions on logits, outside the model."""

from ravit.exits.calibration import Calibration, calibrate_budget, calibrate_max_drop
from ravit.exits.controller import (
    BudgetController,
    ControlTable,
    StreamTrace,
    control_table,
    simulate_stream,
)
from ravit.exits.policy import (
    EXIT_SCORES,
    POLICIES,
    entropy,
    exit_mask,
    exit_score,
    normalize_thresholds,
)
from ravit.exits.simulate import EarlyExitResult, exit_decisions, exit_scores, simulate, sweep

__all__ = [
    "EarlyExitResult",
    "exit_decisions",
    "exit_scores",
    "simulate",
    "sweep",
    "EXIT_SCORES",
    "POLICIES",
    "entropy",
    "exit_mask",
    "exit_score",
    "normalize_thresholds",
    "Calibration",
    "calibrate_budget",
    "calibrate_max_drop",
    "BudgetController",
    "ControlTable",
    "StreamTrace",
    "control_table",
    "simulate_stream",
]
