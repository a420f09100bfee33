"""Shared fixtures of the nascaps test suite."""

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def published_records() -> list[dict]:
    """The genotypes and figures the NASCaps authors published (docs/model.md)."""
    return json.loads((DATA / "nascaps_published.json").read_text())
