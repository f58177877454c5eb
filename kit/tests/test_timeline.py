"""Intervals, windows in a time zone (real months, DST) and business calendars."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from accord_kit.timeline import (
    AlwaysOpen,
    BusinessCalendar,
    Interval,
    calendar_window,
    calendar_windows,
    intersect_all,
    rolling_window,
    subtract,
    total,
    union,
)


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


def iv(a: str, b: str) -> Interval:
    return Interval(t(a), t(b))


def test_union_merges_overlapping_and_touching_intervals_once() -> None:
    got = union(
        [
            iv("2026-01-01T10:00+00:00", "2026-01-01T11:00+00:00"),
            iv("2026-01-01T10:30+00:00", "2026-01-01T12:00+00:00"),
            iv("2026-01-01T12:00+00:00", "2026-01-01T12:10+00:00"),
            iv("2026-01-01T13:00+00:00", "2026-01-01T13:05+00:00"),
        ]
    )
    assert got == [
        iv("2026-01-01T10:00+00:00", "2026-01-01T12:10+00:00"),
        iv("2026-01-01T13:00+00:00", "2026-01-01T13:05+00:00"),
    ]
    assert total(got) == timedelta(hours=2, minutes=15)


def test_subtract_and_intersect() -> None:
    outage = [iv("2026-01-01T01:00+00:00", "2026-01-01T03:00+00:00")]
    maintenance = [iv("2026-01-01T02:00+00:00", "2026-01-01T04:00+00:00")]
    assert subtract(outage, maintenance) == [iv("2026-01-01T01:00+00:00", "2026-01-01T02:00+00:00")]
    assert intersect_all(outage, maintenance) == [iv("2026-01-01T02:00+00:00", "2026-01-01T03:00+00:00")]


def test_a_month_is_a_real_month_in_the_agreements_time_zone() -> None:
    feb = calendar_window("MONTH", t("2026-02-14T12:00+00:00"), "Europe/Amsterdam")
    assert feb == iv("2026-02-01T00:00+01:00", "2026-03-01T00:00+01:00")
    assert feb.duration == timedelta(days=28)
    jan = calendar_window("MONTH", t("2026-01-31T23:30+00:00"), "Europe/Amsterdam")  # already Feb 1st local
    assert jan.start == t("2026-02-01T00:00+01:00")
    march = calendar_window("MONTH", t("2026-03-15T00:00+00:00"), "Europe/Amsterdam")
    assert march.duration == timedelta(days=31) - timedelta(hours=1)  # the DST change loses an hour


def test_weeks_quarters_years_and_rolling_windows() -> None:
    week = calendar_window("WEEK", t("2026-01-07T12:00+00:00"), "UTC")
    assert week == iv("2026-01-05T00:00+00:00", "2026-01-12T00:00+00:00")
    q = calendar_window("QUARTER", t("2026-05-20T00:00+00:00"), "UTC")
    assert q == iv("2026-04-01T00:00+00:00", "2026-07-01T00:00+00:00")
    y = calendar_window("YEAR", t("2026-05-20T00:00+00:00"), "America/New_York")
    assert y.start == t("2026-01-01T00:00-05:00")
    assert rolling_window(7, t("2026-01-08T00:00+00:00")) == iv("2026-01-01T00:00+00:00", "2026-01-08T00:00+00:00")
    months = list(calendar_windows("MONTH", iv("2026-01-15T00:00+00:00", "2026-03-02T00:00+00:00"), "UTC"))
    assert [m.start.month for m in months] == [1, 2, 3]


OFFICE = BusinessCalendar(
    "Europe/Amsterdam",
    tuple((d, "09:00", "17:00") for d in range(1, 6)),
    frozenset({date(2026, 12, 25)}),
)


def test_business_hours_skip_nights_weekends_and_holidays() -> None:
    # Thu 24 Dec 16:00 → Mon 28 Dec 10:00 local: 1 h Thu + (Fri is a holiday) + 1 h Mon.
    span = iv("2026-12-24T16:00+01:00", "2026-12-28T10:00+01:00")
    assert OFFICE.business_time(span) == timedelta(hours=2)


def test_a_business_day_with_a_dst_change_has_its_true_length() -> None:
    # Sunday 29 March 2026 Europe/Amsterdam: clocks jump 02:00 → 03:00.
    night_shift = BusinessCalendar("Europe/Amsterdam", ((7, "00:00", "06:00"),))
    day = iv("2026-03-29T00:00+01:00", "2026-03-30T00:00+02:00")
    assert night_shift.business_time(day) == timedelta(hours=5)
    # Sunday 25 October 2026: 03:00 → 02:00, the night is an hour longer.
    autumn = iv("2026-10-25T00:00+02:00", "2026-10-26T00:00+01:00")
    assert night_shift.business_time(autumn) == timedelta(hours=7)


def test_always_open() -> None:
    span = iv("2026-01-01T00:00+00:00", "2026-01-02T00:00+00:00")
    assert AlwaysOpen().business_time(span) == timedelta(days=1)


def test_an_opening_time_skipped_by_dst_starts_when_the_clock_resumes() -> None:
    # 29 March 2026, Europe/Amsterdam: 02:00 → 03:00. Opening at 02:30 means opening at 03:00.
    cal = BusinessCalendar("Europe/Amsterdam", ((7, "02:30", "04:00"),))
    day = iv("2026-03-29T00:00+01:00", "2026-03-30T00:00+02:00")
    assert cal.open_intervals(day) == [iv("2026-03-29T03:00+02:00", "2026-03-29T04:00+02:00")]


def test_overnight_hours_must_be_split_at_midnight() -> None:
    import pytest

    with pytest.raises(ValueError, match="split them at midnight"):
        BusinessCalendar("UTC", ((1, "22:00", "06:00"),))
