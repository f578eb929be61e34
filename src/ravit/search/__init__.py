"""Search the layer allocation for a budget (the paper's future work), on Optuna.

- `space`: the allocations (branches, depths, resolutions, exit heads) and the budget check.
- `study`: the study in a database, the objective (validation accuracy with early exit
  calibrated for the budget), multi-fidelity pruning, workers sharing one study.
- `outputs`: trials.csv, pareto.csv, pareto.png, best.json.

docs/search.md has the commands.
"""
