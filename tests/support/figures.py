"""What tests measured (counts, times), gathered and printed together at the end of the run: pytest
captures a passing test's output, and these figures are what a run is for."""

from __future__ import annotations

import os

_REPORTED: list[tuple[str, str]] = []


def report_figure(line: str) -> None:
    """Keep `line` for the run's summary, under the name of the test that is running."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0].rsplit("::", 1)[-1]
    _REPORTED.append((test, line))


def reported() -> list[tuple[str, str]]:
    return list(_REPORTED)
