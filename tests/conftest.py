from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The shared offline data (../shared/data beside the checkout), or RAVIT_DATA.
DATA_ROOT = Path(
    os.environ.get("RAVIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")  # a path: module-scoped fixtures may use it too
def data_root() -> Path:
    if not DATA_ROOT.is_dir():
        pytest.skip(f"shared data not found at {DATA_ROOT} (set RAVIT_DATA)")
    return DATA_ROOT
