"""Usage report windows and groups: pure decisions, tested directly."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from jobql.errors import InvalidInput
from jobql.services.usage_report import (
    MAX_WINDOW_DAYS,
    UsageGroup,
    UsageWindow,
    group_order,
    parse_day,
    usage_window,
)

DAY = timedelta(days=1)
JAN_1 = date(2026, 1, 1)


@pytest.mark.parametrize("days", [1, 2, 31, MAX_WINDOW_DAYS])
def test_windows_include_both_ends(days: int) -> None:
    window = usage_window(JAN_1, JAN_1 + (days - 1) * DAY)
    assert window == UsageWindow(JAN_1, JAN_1 + (days - 1) * DAY)
    assert isinstance(window, UsageWindow)
    assert window.days == days


@pytest.mark.parametrize(
    ("first", "last", "says"),
    [
        (JAN_1 + DAY, JAN_1, "`to` must not be before `from`."),
        (JAN_1, JAN_1 + MAX_WINDOW_DAYS * DAY, "at most 366 days"),
        (date(2020, 1, 1), date(2026, 1, 1), "at most 366 days"),
    ],
)
def test_a_bad_window_says_why_on_to(first: date, last: date, says: str) -> None:
    problem = usage_window(first, last)
    assert isinstance(problem, InvalidInput)
    assert problem.field == "to"
    assert [v.path for v in problem.violations] == ["to"]
    assert says in problem.message
    assert problem.message == problem.violations[0].message


def test_groups_come_once_each_in_row_order() -> None:
    assert group_order([]) == ()
    assert group_order([UsageGroup.MODEL, UsageGroup.DAY, UsageGroup.MODEL]) == (
        UsageGroup.DAY,
        UsageGroup.MODEL,
    )
    assert group_order(reversed(list(UsageGroup))) == tuple(UsageGroup)


def test_days_are_written_yyyy_mm_dd() -> None:
    assert parse_day("from", "2024-02-29") == date(2024, 2, 29)
    for text in (
        "2026-02-29",
        "2026-13-01",
        "20260101",
        "2026-1-1",
        "2026-01-01T00:00",
        " 2026-01-01",
        "",
    ):
        problem = parse_day("to", text)
        assert isinstance(problem, InvalidInput), text
        assert (problem.field, problem.violations[0].path) == ("to", "to")
