"""The exit policies' names, importable without NumPy or torch (the CLI lists them)."""

POLICIES = ("entropy", "normalized-entropy", "confidence")
