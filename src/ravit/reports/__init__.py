"""Tables (and, later, plots) built from configs, costs and runs."""
