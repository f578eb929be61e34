"""The early-exit decision: pure functions on logits, outside the model.

`rule` (the exit rule, policy names, thresholds, NumPy scores) and `budget`
(the run-time controller) need no torch and are shared with the exported
runtime; the names below load on first use (`ravit._lazy`), so `import
ravit.exits.rule` does not import torch.
"""

from ravit._lazy import lazy_exports

__all__ = lazy_exports(
    __name__,
    {
        "budget": ["BudgetController", "ControlTable", "parse_budget"],
        "calibration": ["Calibration", "calibrate_budget", "calibrate_max_drop"],
        "controller": ["Segment", "StreamTrace", "control_table", "segments", "simulate_stream"],
        "names": ["POLICIES"],
        "policy": ["EXIT_SCORES", "entropy", "exit_score"],
        "rule": ["first_exit", "leaves", "normalize_thresholds"],
        "simulation": ["EarlyExitResult", "exit_decisions", "exit_scores", "simulate", "sweep"],
    },
)
