"""What the connection scenario tests share (the fixtures are in ``conftest.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

START = datetime(2025, 6, 1, 6, tzinfo=UTC)
"""The lab's simulated clock at the start of each test: a June morning, PV producing."""
MINUTE = 60.0
"""The scenarios' poll interval in these tests. [s]"""
