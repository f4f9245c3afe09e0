import os
from pathlib import Path

import pytest
from hypothesis import settings

# numba compiles (or loads its cache) on first use; keep hypothesis from calling that slow.
settings.register_profile("project", deadline=None, max_examples=60)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "project"))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture
def shared_data():
    """The real data sets of ../shared/data; tests that need them skip cleanly without them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
