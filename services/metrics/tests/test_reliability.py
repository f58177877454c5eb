"""Reliability formulas (docs/domain.md §3–4), each on a worked example computed by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from accord_kit.timeline import AlwaysOpen, BusinessCalendar, Interval, calendar_window, intersect_all, subtract
from accord_metrics.formulas import reliability
from accord_metrics.formulas.reliability import (
    BurnPair,
    Incident,
    RequestCount,
    availability_requests,
    availability_time,
    burn_alerts,
    burn_rate,
    burn_windows,
    error_budget,
    mtbf,
    mttr,
    warning_levels_crossed,
)

AMS = "Europe/Amsterdam"
AMS_TZ = ZoneInfo(AMS)
H24 = AlwaysOpen()
OFFICE = BusinessCalendar(
    AMS, tuple((d, "09:00", "17:00") for d in range(1, 6)), frozenset({date(2026, 12, 25)}), "office", 3
)
SUNDAY_MORNINGS = BusinessCalendar(AMS, ((7, "00:00", "12:00"),), calendar_id="sunday-mornings")


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


def iv(a: str, b: str) -> Interval:
    return Interval(t(a), t(b))


def d(s: str | int) -> Decimal:
    return Decimal(s)


# A UTC day: 1440 min = 86 400 s.
DAY = iv("2026-01-05T00:00+00:00", "2026-01-06T00:00+00:00")


def at(hhmm: str) -> datetime:
    return t(f"2026-01-05T{hhmm}+00:00")


def span(a: str, b: str) -> Interval:
    return Interval(at(a), at(b))


# -- availability, time-based ------------------------------------------------------------------
def test_availability_one_outage_in_a_day() -> None:
    r = availability_time(DAY, H24, [span("10:00", "10:30")], [])
    # (86 400 − 1 800) ÷ 86 400 × 100 = 47/48 × 100 = 97.91666…
    assert r.value == d("97.91666666666666666666666667")
    assert r.reported == d("97.916667")
    assert (r.formula_id, r.formula_version, r.undefined) == ("availability.time", 3, "")
    assert r.detail == {
        "eligible_seconds": "86400",
        "downtime_seconds": "1800",
        "outages_counted": "1",
        "outages_below_minimum": "0",
    }
    assert r.parameters["window_start"] == "2026-01-05T00:00:00+00:00"
    assert r.parameters["calendar"] == "24x7"
    assert r.input_digest.startswith("sha256:")


def test_overlapping_outages_count_once() -> None:
    # 10:00–11:00 and 10:30–12:00 are one outage 10:00–12:00: 2 h down.
    r = availability_time(DAY, H24, [span("10:00", "11:00"), span("10:30", "12:00")], [])
    # (24 − 2) ÷ 24 × 100 = 91.666…
    assert r.value == d("91.66666666666666666666666667")
    assert r.detail["downtime_seconds"] == "7200"
    assert r.detail["outages_counted"] == "1"


def test_an_outage_overlapping_an_exclusion_counts_only_outside_it() -> None:
    # Maintenance 02:00–04:00 (and an overlapping notice 03:00–03:30, counted once);
    # outage 01:00–03:00 → only 01:00–02:00 is downtime.
    exclusions = [span("02:00", "04:00"), span("03:00", "03:30")]
    r = availability_time(DAY, H24, [span("01:00", "03:00")], exclusions)
    # eligible = 24 h − 2 h = 79 200 s; downtime 3 600 s
    # (79 200 − 3 600) ÷ 79 200 × 100 = 21/22 × 100 = 95.4545…
    assert r.detail["eligible_seconds"] == "79200"
    assert r.detail["downtime_seconds"] == "3600"
    assert r.value == d("95.45454545454545454545454545")
    # Entirely inside the exclusion: no downtime at all.
    r2 = availability_time(DAY, H24, [span("02:30", "03:45")], exclusions)
    assert r2.value == d(100)
    assert r2.detail["outages_counted"] == "0"


def test_outages_shorter_than_the_minimum_are_ignored() -> None:
    minute = timedelta(minutes=1)
    outages = [
        Interval(at("01:00"), at("01:00") + timedelta(seconds=59)),  # 59 s < 1 min: ignored
        Interval(at("02:00"), at("02:00") + timedelta(seconds=60)),  # exactly 1 min: counted
        # Three touching 30 s fragments are one 90 s outage: counted.
        Interval(at("03:00:00"), at("03:00:30")),
        Interval(at("03:00:30"), at("03:01:00")),
        Interval(at("03:01:00"), at("03:01:30")),
    ]
    r = availability_time(DAY, H24, outages, [], min_outage=minute)
    # downtime = 60 + 90 = 150 s; (86 400 − 150) ÷ 86 400 × 100 = 86 250 ÷ 864 = 99.826388…
    assert r.detail["downtime_seconds"] == "150"
    assert r.detail["outages_counted"] == "2"
    assert r.detail["outages_below_minimum"] == "1"
    assert r.reported == d("99.826389")
    assert r.parameters["min_outage_seconds"] == "60"
    # Without a minimum all of them count: 59 + 60 + 90 = 209 s.
    assert availability_time(DAY, H24, outages, []).detail["downtime_seconds"] == "209"


def test_the_minimum_is_judged_on_the_whole_outage_not_the_clipped_part() -> None:
    # 23:59:30 → 00:00:30 next day: 60 s long, only 30 s inside the window. It is at least
    # the 1-minute minimum, so its 30 s in this window count.
    crossing = Interval(at("23:59:30"), t("2026-01-06T00:00:30+00:00"))
    r = availability_time(DAY, H24, [crossing], [], min_outage=timedelta(minutes=1))
    assert r.detail["downtime_seconds"] == "30"
    # Likewise an outage mostly inside an exclusion: 01:00–01:10 with maintenance from 01:01.
    r2 = availability_time(DAY, H24, [span("01:00", "01:10")], [span("01:01", "02:00")], timedelta(minutes=5))
    assert r2.detail["downtime_seconds"] == "60"


def test_partial_minutes_are_kept_exactly() -> None:
    outage = Interval(at("12:00"), at("12:00") + timedelta(seconds=90, microseconds=500_000))
    r = availability_time(DAY, H24, [outage], [], min_outage=timedelta(minutes=1))
    # 90.5 s down: (86 400 − 90.5) ÷ 86 400 × 100 = 8 630 950 ÷ 86 400 = 99.8952546296…
    assert r.detail["downtime_seconds"] == "90.5"
    assert r.value == d("99.89525462962962962962962963")
    assert r.reported == d("99.895255")


def test_no_eligible_time_is_no_data() -> None:
    # Saturday and Sunday on an office calendar: nothing is open.
    weekend = iv("2026-01-10T00:00+01:00", "2026-01-12T00:00+01:00")
    r = availability_time(weekend, OFFICE, [iv("2026-01-10T10:00+01:00", "2026-01-10T11:00+01:00")], [])
    assert r.value is None and r.reported is None
    assert r.undefined == "no eligible time"
    assert r.detail["eligible_seconds"] == "0"
    # The whole window excluded.
    assert availability_time(DAY, H24, [], [DAY]).undefined == "no eligible time"
    # An empty window.
    assert availability_time(Interval(at("10:00"), at("10:00")), H24, [], []).value is None


def test_a_31_day_month_exactly_on_target_is_met() -> None:
    jan = calendar_window("MONTH", t("2026-01-15T12:00+00:00"), AMS)
    assert jan == iv("2026-01-01T00:00+01:00", "2026-02-01T00:00+01:00")
    # 31 days = 2 678 400 s; 0.1 % of it = 2 678.4 s = 44 min 38.4 s.
    down = timedelta(minutes=44, seconds=38, microseconds=400_000)
    start = t("2026-01-20T03:00+01:00")
    r = availability_time(jan, H24, [Interval(start, start + down)], [])
    # (2 678 400 − 2 678.4) ÷ 2 678 400 × 100 = 0.999 × 100 = 99.9, exactly.
    assert r.detail["eligible_seconds"] == "2678400"
    assert r.value == d("99.9")
    assert r.value >= d("99.9")  # met: comparisons are exact, no float rounding
    # One microsecond more and it is breached.
    r2 = availability_time(jan, H24, [Interval(start, start + down + timedelta(microseconds=1))], [])
    assert r2.value is not None and r2.value < d("99.9")


def test_a_28_day_month() -> None:
    feb = calendar_window("MONTH", t("2026-02-10T00:00+00:00"), AMS)
    # 28 days = 2 419 200 s; 0.1 % = 2 419.2 s = 40 min 19.2 s.
    start = t("2026-02-03T10:00+01:00")
    outage = Interval(start, start + timedelta(minutes=40, seconds=19, microseconds=200_000))
    r = availability_time(feb, H24, [outage], [])
    assert r.detail["eligible_seconds"] == "2419200"
    assert r.value == d("99.9")
    # The same outage in the 31-day January would leave more: (2 678 400 − 2 419.2) ÷ 2 678 400
    # × 100 = 99.909677…
    jan = calendar_window("MONTH", t("2026-01-10T00:00+00:00"), AMS)
    shifted = Interval(outage.start - timedelta(days=14), outage.end - timedelta(days=14))
    assert availability_time(jan, H24, [shifted], []).reported == d("99.909677")


def test_a_business_day_with_a_dst_change() -> None:
    # Sunday 29 March 2026 in Amsterdam: 02:00 → 03:00. Open 00:00–12:00 local = 11 real hours.
    day = calendar_window("DAY", t("2026-03-29T10:00+00:00"), AMS)
    # Outage 01:30 (+01:00) → 03:30 (+02:00): two wall-clock hours, one real hour.
    outage = iv("2026-03-29T01:30+01:00", "2026-03-29T03:30+02:00")
    r = availability_time(day, SUNDAY_MORNINGS, [outage], [])
    # (11 − 1) ÷ 11 × 100 = 90.9090…
    assert r.detail["eligible_seconds"] == str(11 * 3600)
    assert r.detail["downtime_seconds"] == "3600"
    assert r.value == d("90.90909090909090909090909091")
    # Sunday 25 October 2026: 03:00 → 02:00, the morning has 13 hours; an outage from the first
    # 02:30 (+02:00) to the second 02:30 (+01:00) is one real hour: 12 ÷ 13 × 100 = 92.307692…
    autumn = calendar_window("DAY", t("2026-10-25T10:00+00:00"), AMS)
    r2 = availability_time(autumn, SUNDAY_MORNINGS, [iv("2026-10-25T02:30+02:00", "2026-10-25T02:30+01:00")], [])
    assert r2.detail["eligible_seconds"] == str(13 * 3600)
    assert r2.value == d("92.30769230769230769230769231")
    assert r2.parameters["calendar"] == "sunday-mornings"


def test_outages_outside_business_hours_do_not_count() -> None:
    # Mon 5 Jan 2026 office 09:00–17:00 (8 h); outage 16:00–20:00 local → 1 h in hours.
    week = calendar_window("WEEK", t("2026-01-07T12:00+00:00"), AMS)
    r = availability_time(week, OFFICE, [iv("2026-01-05T16:00+01:00", "2026-01-05T20:00+01:00")], [])
    # eligible = 5 × 8 h = 144 000 s; (40 − 1) ÷ 40 × 100 = 97.5
    assert r.detail["eligible_seconds"] == "144000"
    assert r.value == d("97.5")
    assert (r.parameters["calendar"], r.parameters["calendar_version"]) == ("office", "3")


# -- availability, request-based ----------------------------------------------------------------
W30 = span("10:00", "10:30")  # six 5-minute slices


def count(start: str, minutes: int, good: int, total: int) -> RequestCount:
    s = at(start)
    return RequestCount(s, s + timedelta(minutes=minutes), good, total)


BUCKETS = [
    count("09:59", 1, 0, 500),  # starts before the window: ignored
    count("10:00", 1, 99, 100),  # slice 0: 199/200 = 0.995
    count("10:04", 2, 100, 100),  # slice 0 (spans into slice 1, belongs to its start)
    count("10:05", 1, 90, 100),  # slice 1: 0.9
    # slice 2 (10:10–10:15): no counts → fully successful
    count("10:15", 5, 1000, 1000),  # slice 3: 1
    count("10:20", 5, 0, 0),  # slice 4: no requests → fully successful
    count("10:25", 5, 49, 50),  # slice 5: 0.98
    count("10:30", 1, 0, 500),  # starts at the window's end: ignored
]


def test_occurrences() -> None:
    r = availability_requests(BUCKETS, "OCCURRENCES", W30)
    # Σgood = 99 + 100 + 90 + 1000 + 0 + 49 = 1338; Σtotal = 100 + 100 + 100 + 1000 + 0 + 50 = 1350
    # 1338 ÷ 1350 × 100 = 99.1111…
    assert (r.detail["good"], r.detail["total"], r.detail["counts_in_window"]) == ("1338", "1350", "6")
    assert r.value == d("99.11111111111111111111111111")
    assert r.parameters == {
        "method": "OCCURRENCES",
        "window_start": "2026-01-05T10:00:00+00:00",
        "window_end": "2026-01-05T10:30:00+00:00",
        "calendar": "24x7",
        "calendar_version": "1",
    }
    assert (r.formula_version, r.detail["eligible_seconds"], r.detail["counts_excluded"]) == (4, "1800", "0")
    # Version 1, kept for the windows recorded with it: the same value, no calendar.
    v1 = availability_requests(BUCKETS, "OCCURRENCES", W30, version=1)
    assert (v1.formula_version, v1.value) == (1, r.value)
    assert "calendar" not in v1.parameters and v1.input_digest != r.input_digest


def test_timeslices() -> None:
    r = availability_requests(BUCKETS, "TIMESLICES", W30, slice_minutes=5, slice_target=d("99.5"))
    # Good slices (ratio ≥ 99.5 %): 0 (exactly 99.5 — on target is good), 2 (empty), 3, 4 (empty);
    # bad: 1 (90 %), 5 (98 %). 4 ÷ 6 × 100 = 66.666…
    assert r.detail["slices"] == "6"
    assert r.detail["empty_slices"] == "2"
    assert r.detail["good_slices"] == "4"
    assert r.value == d("66.66666666666666666666666667")
    assert r.parameters["slice_target"] == "99.5"
    # A stricter slice target turns slice 0 bad: 3 ÷ 6 = 50 %.
    assert availability_requests(BUCKETS, "TIMESLICES", W30, slice_target=d("99.6")).value == d(50)


def test_ratio_timeslices() -> None:
    r = availability_requests(BUCKETS, "RATIO_TIMESLICES", W30)
    # (0.995 + 0.9 + 1 + 1 + 1 + 0.98) ÷ 6 × 100 = 5.875 ÷ 6 × 100 = 97.91666…
    assert r.value == d("97.91666666666666666666666667")
    # 10-minute slices: 10:00–10:10 has (99 + 100 + 90) good of 300 = 0.96333…; 10:10–10:20
    # 1000/1000 = 1; 10:20–10:30 (0 + 49) of (0 + 50) = 0.98
    # (0.96333… + 1 + 0.98) ÷ 3 × 100 = 2.94333… ÷ 3 × 100 = 98.111…
    r10 = availability_requests(BUCKETS, "RATIO_TIMESLICES", W30, slice_minutes=10)
    assert r10.detail["slices"] == "3"
    assert r10.reported == d("98.111111")


def test_a_last_partial_slice_is_a_slice() -> None:
    # 12 minutes of 5-minute slices: 10:00, 10:05, 10:10 (2 min). Only the last has requests.
    r = availability_requests([count("10:11", 1, 1, 2)], "RATIO_TIMESLICES", span("10:00", "10:12"))
    # (1 + 1 + 0.5) ÷ 3 × 100 = 83.333…
    assert r.detail["slices"] == "3"
    assert r.value == d("83.33333333333333333333333333")


def test_request_based_zero_denominators() -> None:
    r = availability_requests([count("10:20", 5, 0, 0)], "OCCURRENCES", W30)
    assert r.value is None and r.undefined == "no requests in the window"
    # No requests at all: every slice is fully successful.
    assert availability_requests([], "RATIO_TIMESLICES", W30).value == d(100)
    assert availability_requests([], "TIMESLICES", W30, slice_target=d(99)).value == d(100)
    # An empty window has no slice.
    empty = Interval(at("10:00"), at("10:00"))
    assert availability_requests([], "TIMESLICES", empty, slice_target=d(99)).undefined == "no eligible time"
    assert availability_requests([], "RATIO_TIMESLICES", empty).value is None


def test_request_based_exactly_on_target() -> None:
    r = availability_requests([count("10:00", 30, 999, 1000)], "OCCURRENCES", W30)
    assert r.value == d("99.9") and r.value >= d("99.9")


def test_request_based_leaves_out_excluded_time() -> None:
    # A declared maintenance window (or suspended time) 10:05–10:15: the counts that start in
    # it are not measured, as an outage in it would not be (docs/domain.md §3 "Exclusions").
    maintenance = [span("10:05", "10:15")]
    r = availability_requests(BUCKETS, "OCCURRENCES", W30, exclusions=maintenance)
    # Σgood = 99 + 100 + 1000 + 0 + 49 = 1248 of 100 + 100 + 1000 + 0 + 50 = 1250 → 99.84
    assert (r.detail["good"], r.detail["total"], r.detail["counts_excluded"]) == ("1248", "1250", "1")
    assert r.value == d("99.84") and r.detail["eligible_seconds"] == "1200"
    # Every request in the window excluded: nothing measured, for want of eligible time.
    whole = availability_requests(BUCKETS, "OCCURRENCES", W30, exclusions=[span("09:00", "11:00")])
    assert whole.value is None and whole.undefined == "no eligible time"
    # Version 1 measured them all.
    assert availability_requests(BUCKETS, "OCCURRENCES", W30, exclusions=maintenance, version=1).value == d(
        "99.11111111111111111111111111"
    )
    # The exclusions are inputs: another maintenance window is another digest.
    other = availability_requests(BUCKETS, "OCCURRENCES", W30, exclusions=[span("10:05", "10:10")])
    assert other.input_digest != r.input_digest


def test_request_based_slices_of_excluded_time_are_not_slices() -> None:
    # Excluded 10:07–10:15: slice 1 (10:05–10:10) keeps two eligible minutes and its count at
    # 10:05; slice 2 (10:10–10:15), excluded whole, is no slice of the window.
    r = availability_requests(BUCKETS, "TIMESLICES", W30, slice_target=d("99.5"), exclusions=[span("10:07", "10:15")])
    # Slices 0, 1, 3, 4, 5 (5): good 0, 3, 4 (empty); bad 1 (90 %), 5 (98 %) → 3 ÷ 5 = 60 %
    assert (r.detail["slices"], r.detail["empty_slices"], r.detail["good_slices"]) == ("5", "1", "3")
    assert r.value == d(60)
    # An empty slice that is excluded whole no longer counts as a good one.
    quiet = availability_requests(
        [count("10:00", 1, 0, 10)], "RATIO_TIMESLICES", W30, exclusions=[span("10:05", "10:30")]
    )
    assert (quiet.detail["slices"], quiet.value) == ("1", d(0))
    # Version 1: every slice (6), the excluded empty one counted good.
    v1 = availability_requests(
        [count("10:00", 1, 0, 10)], "RATIO_TIMESLICES", W30, exclusions=[span("10:05", "10:30")], version=1
    )
    assert (v1.detail["slices"], v1.value) == ("6", d("83.33333333333333333333333333"))


def test_request_based_counts_only_open_hours() -> None:
    # A business-hours calendar: the counts starting outside its open hours are not measured.
    week = iv("2026-01-05T00:00+01:00", "2026-01-12T00:00+01:00")  # Monday to Monday, Amsterdam
    counts = [
        RequestCount(t("2026-01-05T08:59+01:00"), t("2026-01-05T09:00+01:00"), 0, 100),  # before opening
        RequestCount(t("2026-01-05T09:00+01:00"), t("2026-01-05T09:01+01:00"), 99, 100),  # open
        RequestCount(t("2026-01-10T12:00+01:00"), t("2026-01-10T12:01+01:00"), 0, 100),  # Saturday
    ]
    r = availability_requests(counts, "OCCURRENCES", week, calendar=OFFICE)
    assert (r.value, r.detail["counts_excluded"], r.parameters["calendar"]) == (d(99), "2", "office")
    assert r.detail["eligible_seconds"] == str(5 * 8 * 3600)
    # 1-hour slices: 5 days × 8 open hours = 40 slices; one bad (99 % < 99.5 %).
    s = availability_requests(counts, "TIMESLICES", week, slice_minutes=60, slice_target=d("99.5"), calendar=OFFICE)
    assert (s.detail["slices"], s.detail["good_slices"]) == ("40", "39")


def test_request_based_versions() -> None:
    with pytest.raises(ValueError, match="versions"):
        availability_requests(BUCKETS, "OCCURRENCES", W30, version=5)


def test_a_request_count_holds_no_dict() -> None:
    """A window's selection holds every request count of it: slotted, a count is 64 B, not 104."""
    import sys

    count = RequestCount(at("10:00"), at("10:01"), 5, 7)
    assert not hasattr(count, "__dict__") and sys.getsizeof(count) <= 64
    with pytest.raises(AttributeError):
        count.good = 6  # type: ignore[misc]


def test_request_based_bad_arguments() -> None:
    with pytest.raises(ValueError, match="slice_target"):
        availability_requests(BUCKETS, "TIMESLICES", W30)
    with pytest.raises(ValueError, match="unknown method"):
        availability_requests(BUCKETS, "SLICES", W30)
    with pytest.raises(ValueError):
        availability_requests(BUCKETS, "RATIO_TIMESLICES", W30, slice_minutes=0)
    with pytest.raises(TypeError):
        availability_requests(BUCKETS, "TIMESLICES", W30, slice_target=99.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RequestCount(at("10:00"), at("10:01"), 5, 4)


# -- MTTR -------------------------------------------------------------------------------------------
INCIDENTS = [
    # A: 01:00, responded 01:05, restored 01:30, resolved 03:00
    Incident(at("01:00"), restored_at=at("01:30"), resolved_at=at("03:00"), responded_at=at("01:05")),
    # B: 10:00, responded 10:20, restored 10:45, resolved 12:00
    Incident(at("10:00"), restored_at=at("10:45"), resolved_at=at("12:00"), responded_at=at("10:20")),
    # C: 23:30, responded 23:40, restored after midnight (next window), not resolved yet
    Incident(at("23:30"), restored_at=t("2026-01-06T00:30+00:00"), responded_at=at("23:40")),
]


def test_mttr_restore() -> None:
    r = mttr(INCIDENTS, DAY)
    # downtime in the window = 30 (A) + 45 (B) + 30 (C, 23:30–24:00) = 105 min;
    # restored in the window: A and B → 105 ÷ 2 = 52.5 min
    assert r.value == d("52.5")
    assert r.parameters["r"] == "RESTORE"
    assert r.detail == {
        "r": "RESTORE",
        "downtime_seconds": "6300",
        "eligible_seconds": "86400",
        "restored": "2",
        "running": "1",
    }
    assert r.formula_id == "mttr"


def test_mttr_variants_record_their_r() -> None:
    repair = mttr(INCIDENTS, DAY, r="REPAIR")
    assert repair.value == d("52.5")  # REPAIR reads restored_at, like RESTORE
    assert repair.parameters["r"] == "REPAIR"
    assert repair.input_digest != mttr(INCIDENTS, DAY).input_digest
    # RESOLVE: 120 (A 01:00–03:00) + 120 (B 10:00–12:00) + 30 (C running to 24:00) = 270 min;
    # resolved in the window: A, B → 135 min
    assert mttr(INCIDENTS, DAY, r="RESOLVE").value == d(135)
    # RESPOND: 5 + 20 + 10 = 35 min, all three responded to → 35 ÷ 3 = 11.666…
    respond = mttr(INCIDENTS, DAY, r="RESPOND")
    assert respond.value == d("11.66666666666666666666666667")
    assert respond.detail["running"] == "0"
    with pytest.raises(ValueError, match="unknown R"):
        mttr(INCIDENTS, DAY, r="REBOOT")


_HOURS = st.integers(-72, 48)  # hours from the window's start


@st.composite
def _incidents(draw: st.DrawFn) -> list[Incident]:
    """Incidents starting from three days before the window to a day after it, each stop after
    the failure by some hours, or missing."""
    out = []
    for _ in range(draw(st.integers(0, 8))):
        start = DAY.start + timedelta(hours=draw(_HOURS), minutes=draw(st.integers(0, 59)))
        stops = [None if draw(st.integers(0, 3)) == 0 else start + timedelta(minutes=draw(st.integers(0, 3000)))
                 for _ in range(3)]  # fmt: skip
        out.append(Incident(start, restored_at=stops[0], resolved_at=stops[1], responded_at=stops[2]))
    return out


@given(_incidents(), st.sampled_from(sorted(reliability.R_VARIANTS)))
def test_mttr_v2_digests_the_incidents_that_reach_the_window_so_the_others_can_be_left_out(
    incidents: list[Incident], r: str
) -> None:
    """v2 gives v1's value and detail, but digests only the incidents that reach the window
    (failure before its end, clock not stopped before its start): one stopped before the window,
    or one failing after it, changes v1's digest and not v2's — so a round may pass only the
    incidents that did not settle before the window, not every incident of history."""
    v2, v1 = mttr(incidents, DAY, r=r), mttr(incidents, DAY, r=r, version=1)
    assert (v2.formula_version, v1.formula_version) == (2, 1)
    assert (v2.value, v2.detail, v2.parameters) == (v1.value, v1.detail, v1.parameters)
    reaching = [i for i in incidents if i.failure_start < DAY.end and not ((e := i.ended(r)) and e < DAY.start)]
    assert mttr(reaching, DAY, r=r).input_digest == v2.input_digest
    old = Incident(t("2025-06-01T10:00+00:00"), t("2025-06-01T11:00+00:00"), t("2025-06-01T12:00+00:00"),
                   t("2025-06-01T10:05+00:00"))  # fmt: skip
    assert mttr([*incidents, old], DAY, r=r).input_digest == v2.input_digest
    assert mttr([*incidents, old], DAY, r=r, version=1).input_digest != v1.input_digest
    with pytest.raises(ValueError, match="mttr has versions"):
        mttr(incidents, DAY, r=r, version=3)


def test_mttr_overlapping_incidents_count_once_and_none_restored_is_undefined() -> None:
    both = [
        Incident(at("10:00"), restored_at=at("11:00")),
        Incident.from_outage(span("10:30", "11:30")),
    ]
    # downtime = 10:00–11:30 = 90 min once; 2 restored → 45 min
    assert mttr(both, DAY).value == d(45)
    running = [Incident(at("22:00"))]
    r = mttr(running, DAY)
    assert r.value is None
    assert r.undefined == "no incident restored in the window"
    assert r.detail["downtime_seconds"] == "7200"  # 22:00–24:00, still down
    assert mttr([], DAY, r="RESOLVE").undefined == "no incident resolved in the window"


def test_mttr_in_business_hours() -> None:
    # Fails Friday 9 Jan 16:30, restored Monday 12 Jan 09:30 (local): 30 + 30 min in office hours.
    week = iv("2026-01-05T00:00+01:00", "2026-01-19T00:00+01:00")
    inc = Incident(t("2026-01-09T16:30+01:00"), restored_at=t("2026-01-12T09:30+01:00"))
    r = mttr([inc], week, OFFICE)
    assert r.value == d(60)
    # With maintenance Monday 09:00–10:00 the Monday half hour is excluded.
    maintenance = [iv("2026-01-12T09:00+01:00", "2026-01-12T10:00+01:00")]
    assert mttr([inc], week, OFFICE, exclusions=maintenance).value == d(30)


# -- MTBF -------------------------------------------------------------------------------------------
def test_mtbf() -> None:
    failures = [
        iv("2026-01-04T23:50+00:00", "2026-01-05T00:10+00:00"),  # started the day before: 10 min down here
        span("02:00", "02:30"),  # 30 min
        span("14:00", "15:00"),  # overlaps the next: one failure 14:00–15:10, 70 min
        span("14:30", "15:10"),
    ]
    r = mtbf(DAY, H24, failures)
    # eligible 86 400 s; downtime 10 + 30 + 70 = 110 min = 6 600 s; failures starting in the window: 2
    # (86 400 − 6 600) ÷ 2 ÷ 3 600 = 79 800 ÷ 7 200 = 11.0833… h
    assert r.detail == {"eligible_seconds": "86400", "downtime_seconds": "6600", "failures": "2"}
    assert r.value == d("11.08333333333333333333333333")
    assert r.formula_id == "mtbf"


def test_mtbf_with_no_failure_is_undefined_and_met() -> None:
    r = mtbf(DAY, H24, [])
    assert r.value is None
    assert r.undefined == "no failure in the window"
    assert r.detail["met"] == "true"
    # No eligible time is NO_DATA, not "met".
    weekend = iv("2026-01-10T00:00+01:00", "2026-01-12T00:00+01:00")
    nd = mtbf(weekend, OFFICE, [])
    assert nd.undefined == "no eligible time" and "met" not in nd.detail


def test_mtbf_in_business_hours_with_exclusions() -> None:
    # Mon 5 Jan office day 09:00–17:00, maintenance 12:00–13:00 → eligible 7 h.
    day = calendar_window("DAY", t("2026-01-05T12:00+00:00"), AMS)
    failures = [iv("2026-01-05T08:00+01:00", "2026-01-05T09:30+01:00")]  # 30 min in hours
    r = mtbf(day, OFFICE, failures, exclusions=[iv("2026-01-05T12:00+01:00", "2026-01-05T13:00+01:00")])
    # (7 h − 0.5 h) ÷ 1 = 6.5 h
    assert r.value == d("6.5")


# -- error budget, burn rate, alerts --------------------------------------------------------------
def test_error_budget_on_requests() -> None:
    r = error_budget(d("99.9"), 999_400, 1_000_000)
    # allowed bad = 1 000 000 × 0.1 % = 1 000; bad = 600 → 60 % consumed, 40 % left
    assert r.value == d(60)
    assert Decimal(r.detail["allowed_bad"]) == 1000
    assert Decimal(r.detail["remaining_percent"]) == d(40)
    assert warning_levels_crossed(r.value) == (d(50),)


def test_error_budget_on_time_spent_exactly() -> None:
    # A 30-day window (2 592 000 s) at 99.9 % allows 2 592 s of downtime; 2 592 s down → 100 %.
    r = error_budget(d("99.9"), d(2_592_000) - d(2_592), d(2_592_000))
    assert r.value == d(100)
    assert Decimal(r.detail["remaining_percent"]) == 0
    # Overspent: 3 888 s down → 150 %, remaining −50 %.
    over = error_budget(d("99.9"), d(2_592_000) - d(3_888), d(2_592_000))
    assert over.value == d(150) and Decimal(over.detail["remaining_percent"]) == d(-50)


def test_error_budget_undefined() -> None:
    assert error_budget(d("99.9"), 0, 0).undefined == "no eligible input"
    assert error_budget(d(100), 10, 10).undefined == "the target leaves no error budget"
    with pytest.raises(ValueError):
        error_budget(d("99.9"), 11, 10)
    with pytest.raises(TypeError):
        error_budget(99.9, 1, 10)  # type: ignore[arg-type]


def test_burn_rate() -> None:
    # error ratio 1.44 % against a 99.9 % target: 0.0144 ÷ 0.001 = 14.4
    r = burn_rate(d("0.0144"), d("99.9"))
    assert r.value == d("14.4")
    assert r.parameters == {"target_percent": "99.9"}
    # 0.1 % errors on 99.9 %: the budget lasts exactly the window
    assert burn_rate(d("0.001"), d("99.9")).value == 1
    assert burn_rate(d("0.5"), d(100)).value is None


def test_burn_alerts_for_a_30_day_window() -> None:
    rates = {
        timedelta(hours=1): d(15),  # 14.4 pair: 15 > 14.4 …
        timedelta(minutes=5): d("14.5"),  # … and 14.5 > 14.4 → fires
        timedelta(hours=6): d(6),  # 6 pair: 6 is not > 6 → silent; also the short window of the 1 pair (6 > 1)
        timedelta(minutes=30): d(20),
        timedelta(days=1): d(2),  # 3 pair: 2 < 3 → silent
        timedelta(hours=2): d(10),
        timedelta(days=3): d("1.1"),  # 1 pair: 1.1 > 1 and 6 > 1 → fires
    }
    fired = burn_alerts(rates, timedelta(days=30))
    assert fired == (
        BurnPair(d("14.4"), timedelta(hours=1), timedelta(minutes=5)),
        BurnPair(d(1), timedelta(days=3), timedelta(hours=6)),
    )
    # The long window alone is not enough.
    assert burn_alerts({**rates, timedelta(minutes=5): d(1)}, timedelta(days=30))[0].factor == 1
    with pytest.raises(ValueError, match="no burn rate"):
        burn_alerts({timedelta(hours=1): d(20)}, timedelta(days=30))


def test_burn_windows_scale_with_the_window() -> None:
    # 28 days = 28/30 of the reference: 1 h → 56 min, 5 min → 4 min 40 s, 3 days → 2 days 19 h 12 min.
    feb = burn_windows(timedelta(days=28))
    assert feb[0] == BurnPair(d("14.4"), timedelta(minutes=56), timedelta(minutes=4, seconds=40))
    assert feb[3] == BurnPair(d(1), timedelta(days=2, hours=19, minutes=12), timedelta(hours=5, minutes=36))
    # 7 days: 1 h × 7/30 = 14 min; 5 min × 7/30 = 70 s
    week = burn_windows(timedelta(days=7))
    assert (week[0].long, week[0].short) == (timedelta(minutes=14), timedelta(seconds=70))
    fired = burn_alerts({w: d(20) for p in week for w in (p.long, p.short)}, timedelta(days=7))
    assert [p.factor for p in fired] == [d("14.4"), d(6), d(3), d(1)]


def test_a_burn_alerts_name_is_its_pair_as_written() -> None:
    from accord_metrics.judging import burn_alert_name

    feb = burn_windows(timedelta(days=28))
    assert burn_alert_name(feb[0]) == "14.4x 0:56:00/0:04:40"
    assert burn_alert_name(feb[0]) == "14.4x 0:56:00/0:04:40"  # the kept name, the same
    # An equal pair whose factor is written otherwise has its own name (names are kept per pair).
    assert burn_alert_name(BurnPair(d("14.40"), feb[0].long, feb[0].short)) == "14.40x 0:56:00/0:04:40"


def test_warning_levels() -> None:
    assert warning_levels_crossed(d("49.999")) == ()
    assert warning_levels_crossed(d(75)) == (d(50), d(75))  # reaching a level crosses it
    assert warning_levels_crossed(d(120)) == (d(50), d(75), d(90))
    assert warning_levels_crossed(d(60), levels=(d("25.5"), 80)) == (d("25.5"),)
    assert warning_levels_crossed(None) == ()


# -- order and representation independence ---------------------------------------------------------
def minutes_span(p: tuple[int, int]) -> Interval:
    return Interval(DAY.start + timedelta(minutes=p[0]), DAY.start + timedelta(minutes=p[0] + p[1]))


intervals = st.tuples(st.integers(-60, 1500), st.integers(0, 240)).map(minutes_span)


def shuffled(xs: st.SearchStrategy[list[Interval]]) -> st.SearchStrategy[tuple[list[Interval], list[Interval]]]:
    return xs.flatmap(lambda v: st.tuples(st.just(v), st.permutations(v)))


@given(shuffled(st.lists(intervals, max_size=8)), shuffled(st.lists(intervals, max_size=3)))
def test_time_formulas_do_not_depend_on_input_order(
    outages: tuple[list[Interval], list[Interval]], exclusions: tuple[list[Interval], list[Interval]]
) -> None:
    (o1, o2), (e1, e2) = outages, exclusions
    a = availability_time(DAY, H24, o1, e1, timedelta(minutes=5))
    b = availability_time(DAY, H24, o2, e2, timedelta(minutes=5))
    assert a == b
    assert a.value is None or d(0) <= a.value <= d(100)
    assert mtbf(DAY, OFFICE, o1, exclusions=e1) == mtbf(DAY, OFFICE, o2, exclusions=e2)
    incidents1 = [Incident.from_outage(o) for o in o1]
    incidents2 = [Incident.from_outage(o) for o in o2]
    assert mttr(incidents1, DAY, exclusions=e1) == mttr(incidents2, DAY, exclusions=e2)


@given(
    st.lists(
        st.tuples(st.integers(0, 29), st.integers(0, 50), st.integers(0, 50)).map(
            lambda p: count(f"10:{p[0]:02d}", 1, min(p[1], p[2]), max(p[1], p[2]))
        ),
        max_size=10,
    ).flatmap(lambda v: st.tuples(st.just(v), st.permutations(v))),
    st.sampled_from(["OCCURRENCES", "TIMESLICES", "RATIO_TIMESLICES"]),
)
def test_request_formulas_do_not_depend_on_input_order(
    buckets: tuple[list[RequestCount], list[RequestCount]], method: str
) -> None:
    a = availability_requests(buckets[0], method, W30, slice_target=d(95))
    b = availability_requests(buckets[1], method, W30, slice_target=d(95))
    assert a == b


def test_the_digest_ignores_the_utc_offset_and_sees_parameters_and_inputs() -> None:
    outage = span("10:00", "10:30")
    cet = Interval(outage.start.astimezone(AMS_TZ), outage.end.astimezone(AMS_TZ))
    window_cet = Interval(DAY.start.astimezone(AMS_TZ), DAY.end.astimezone(AMS_TZ))
    base = availability_time(DAY, H24, [outage], [])
    assert availability_time(window_cet, H24, [cet], []) == base
    assert availability_time(DAY, H24, [outage], [], timedelta(minutes=1)).input_digest != base.input_digest
    assert availability_time(DAY, H24, [span("10:00", "10:31")], []).input_digest != base.input_digest
    # A different calendar definition with the same id and version is a different input.
    other = BusinessCalendar(AMS, OFFICE.hours, frozenset(), "office", 3)
    assert (
        availability_time(DAY, other, [outage], []).input_digest
        != availability_time(DAY, OFFICE, [outage], []).input_digest
    )


def _canonical(payload: object) -> bytes:
    """Canonical JSON as the rule states it (keys sorted, compact, ASCII), of plain data."""
    import json

    from accord_metrics.formulas import common

    return json.dumps(common._canonical(payload), sort_keys=True, separators=(",", ":")).encode()


def _auditors_buckets(records: list[tuple[bytes, int]]) -> tuple[list[str], list[str]]:
    """The 64 bucket digests an auditor works out from records in order, each with its hour: bucketed
    (a bucket's records hashed together), and bucketed by hours (a bucket's runs of one hour each
    hashed, then their digests) — docs/domain.md §4, "The input digest"."""
    import zlib
    from hashlib import sha256

    buckets: list[list[bytes]] = [[] for _ in range(64)]
    runs: list[dict[int, list[bytes]]] = [{} for _ in range(64)]
    for text, hour in records:
        buckets[zlib.crc32(text) % 64].append(text)
        runs[zlib.crc32(text) % 64].setdefault(hour, []).append(text)
    assert sum(len(r) > 1 for r in runs) > 32  # most buckets: several hours
    by_hours = [
        sha256(",".join(sha256(b",".join(r[h])).hexdigest() for h in sorted(r)).encode()).hexdigest()
        if r
        else sha256(b"").hexdigest()
        for r in runs
    ]
    return [sha256(b",".join(b)).hexdigest() for b in buckets], by_hours


def _auditors_digest(formula_id: str, version: int, parameters: dict[str, str], inputs: dict[str, Any]) -> str:
    from hashlib import sha256

    payload = {
        "formula_id": formula_id,
        "formula_version": version,
        "parameters": parameters,
        "inputs": inputs,
        "calendar": {"calendar_id": H24.calendar_id, "version": H24.version},
    }
    return "sha256:" + sha256(_canonical(payload)).hexdigest()


def _hour(instant: str) -> int:
    return int(datetime.fromisoformat(instant).timestamp()) // 3600


def test_availability_v3_digests_the_outages_by_hour_as_an_auditor_recomputes_it() -> None:
    """v3 deals the outages' records ([start, end] in UTC), sorted, into the 64 buckets by their
    CRC-32, each bucket in runs by the hour (UTC) the outage started in: a run's digest the SHA-256
    of its records, the bucket's the SHA-256 of its runs' digests; v2 the bucket's records alone.
    Worked out from the records, with no code of the service's; value and detail are v2's."""
    base = datetime(2026, 3, 1, tzinfo=UTC)
    # 300 outages of a minute, 40 minutes apart (over ≈ 200 hours), and two starting together.
    outages = [Interval(base + timedelta(minutes=40 * i), base + timedelta(minutes=40 * i + 1)) for i in range(300)]
    outages.append(Interval(base + timedelta(minutes=80), base + timedelta(minutes=95)))
    window = Interval(base, base + timedelta(days=10))
    v3 = availability_time(window, H24, outages, [], timedelta(minutes=1))
    v2 = availability_time(window, H24, outages, [], timedelta(minutes=1), version=2)
    assert (v3.formula_version, v2.formula_version) == (3, 2) and v3.input_digest != v2.input_digest
    assert (v3.value, v3.detail, v3.parameters) == (v2.value, v2.detail, v2.parameters)

    listed = sorted([o.start.isoformat(), o.end.isoformat()] for o in outages)
    bucketed, by_hours = _auditors_buckets([(_canonical(r), _hour(r[0])) for r in listed])
    for version, evaluated, buckets in ((2, v2, bucketed), (3, v3, by_hours)):
        inputs = {"outages": buckets, "exclusions": []}
        assert evaluated.input_digest == _auditors_digest("availability.time", version, v3.parameters, inputs)


def test_request_availability_v4_digests_the_counts_by_hour_as_an_auditor_recomputes_it() -> None:
    """v4 deals the counts' records ([start, end, good, total], instants in UTC), sorted, into the
    64 buckets by their CRC-32, each bucket in runs by the hour (UTC) the count started in: a
    run's digest the SHA-256 of its records, the bucket's the SHA-256 of its runs' digests; v3 the
    bucket's records alone. Worked out from the records, with no code of the service's (counts
    given out of order and in another offset); value and detail are v3's."""
    import random

    base = datetime(2026, 3, 1, tzinfo=UTC)
    plus2 = timezone(timedelta(hours=2))
    # A count a minute for ≈ 100 hours, half of them written at UTC+2, and two with one start.
    counts = [
        RequestCount(
            (base + timedelta(minutes=i)).astimezone(plus2 if i % 2 else UTC),
            base + timedelta(minutes=i + 1), 990 + i % 11, 1000,
        )
        for i in range(6000)
    ]  # fmt: skip
    counts.append(RequestCount(base + timedelta(minutes=60), base + timedelta(minutes=61), 5, 7))
    random.Random(4).shuffle(counts)
    window = Interval(base, base + timedelta(days=10))
    v4 = availability_requests(counts, "OCCURRENCES", window)
    v3 = availability_requests(counts, "OCCURRENCES", window, version=3)
    assert (v4.formula_version, v3.formula_version) == (4, 3) and v4.input_digest != v3.input_digest
    assert (v4.value, v4.detail, v4.parameters) == (v3.value, v3.detail, v3.parameters)

    def utc(t: datetime) -> str:
        return t.astimezone(UTC).isoformat()

    listed = sorted([utc(b.start), utc(b.end), b.good, b.total] for b in counts)
    bucketed, by_hours = _auditors_buckets([(_canonical(r), _hour(str(r[0]))) for r in listed])
    for version, evaluated, buckets in ((3, v3, bucketed), (4, v4, by_hours)):
        inputs = {"counts": buckets, "exclusions": []}
        assert evaluated.input_digest == _auditors_digest("availability.requests", version, v4.parameters, inputs)


_MINUTES = st.tuples(st.integers(0, 600), st.integers(0, 120))


@given(st.lists(_MINUTES, max_size=12), st.lists(_MINUTES, max_size=8))
@example([(10, 5)], [(15, 5)])  # touching: no common part
@example([(10, 5)], [(14, 5)])  # one minute in common
@example([(10, 0)], [(0, 30)])  # an empty outage
def test_outages_counted_are_those_with_a_common_part_with_eligible_time(
    outages: list[tuple[int, int]], others: list[tuple[int, int]]
) -> None:
    """`availability_time`'s outages_counted, found by bisection, is what intersecting each merged
    outage with every eligible interval gives (empty, touching and overlapping ones included)."""
    from accord_kit.timeline import intersect_all, union
    from accord_metrics.formulas.reliability import _with_common_part

    base = datetime(2026, 3, 1, tzinfo=UTC)

    def ivs(pairs: list[tuple[int, int]]) -> list[Interval]:
        return [Interval(base + timedelta(minutes=s), base + timedelta(minutes=s + n)) for s, n in pairs]

    merged, eligible = union(ivs(outages)), ivs(others)
    assert _with_common_part(merged, eligible) == sum(1 for o in merged if intersect_all([o], eligible))
    unmerged = ivs(outages)  # and for any intervals, in any order
    assert _with_common_part(unmerged, eligible) == sum(1 for o in unmerged if intersect_all([o], eligible))


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)), st.timedeltas(min_value=timedelta(0))
)
@example(datetime(2026, 10, 25, 0, 30), timedelta(hours=1, microseconds=1))
def test_an_intervals_record_written_directly_is_its_canonical_json(start: datetime, length: timedelta) -> None:
    """What availability digests of an outage (written directly, kept on it) is byte for byte
    the generic canonical JSON of its UTC pair, whatever offset it was written with."""
    from accord_metrics.formulas.common import canonical_json, encoded_all
    from accord_metrics.formulas.reliability import _utc_pair, _utc_pair_json

    s = start.replace(tzinfo=UTC).astimezone(AMS_TZ)
    try:
        i = Interval(s, s + length)
    except OverflowError:
        return
    assert _utc_pair_json(i) == canonical_json(_utc_pair(i))
    assert encoded_all([i], _utc_pair, _utc_pair_json) == [canonical_json(_utc_pair(i))]


@given(intervals, st.lists(intervals, max_size=6), st.integers(-30, 30))
def test_an_always_open_calendars_eligible_time_is_the_window_less_its_exclusions(
    window: Interval, exclusions: list[Interval], shift: int
) -> None:
    """The same intervals as the general path (the window ∩ its open hours − exclusions), an
    empty or reversed window included, without intersecting the window with itself."""
    window = Interval(window.start, window.end + timedelta(minutes=shift))  # some empty, some reversed
    general = subtract(intersect_all([window], H24.open_intervals(window)), exclusions)
    assert reliability.eligible_intervals(window, H24, exclusions) == general


def test_an_always_open_calendars_eligible_time_is_not_intersected(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object) -> None:
        raise AssertionError("intersected")

    monkeypatch.setattr(reliability, "intersect_all", refused)
    window = Interval(t("2026-02-01T00:00:00+00:00"), t("2026-03-01T00:00:00+00:00"))
    out = reliability.eligible_intervals(
        window, H24, [Interval(t("2026-02-02T00:00:00+00:00"), t("2026-02-03T00:00:00+00:00"))]
    )
    assert out == [
        Interval(t("2026-02-01T00:00:00+00:00"), t("2026-02-02T00:00:00+00:00")),
        Interval(t("2026-02-03T00:00:00+00:00"), t("2026-03-01T00:00:00+00:00")),
    ]
    with pytest.raises(AssertionError, match="intersected"):
        reliability.eligible_intervals(window, OFFICE)
