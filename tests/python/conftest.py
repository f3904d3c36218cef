import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def build_dir():
    path = pathlib.Path(os.environ.get("MNEMO_BUILD_DIR", ROOT / "build"))
    tool = path / "tools" / "mnemo-local"
    assert tool.exists(), f"{tool} is missing: build first (tools/test.sh does)"
    return path
