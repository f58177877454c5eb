"""Contact-centre formulas (docs/domain.md §4 "Contact centre"): hand-computed worked examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord_kit.timeline import Interval
from accord_metrics.formulas.contact import (
    Call,
    FcrMethod,
    ServiceLevelVariant,
    abandonment_rate,
    aht,
    asa,
    fcr,
    first_contacts,
    service_level,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
T = timedelta(seconds=20)
S = timedelta(seconds=5)
V = ServiceLevelVariant


def answered(call_id: str, wait: float, **kw: object) -> Call:
    return Call(call_id, T0, answered_at=T0 + timedelta(seconds=wait), **kw)  # type: ignore[arg-type]


def abandoned(call_id: str, wait: float) -> Call:
    return Call(call_id, T0, abandoned_at=T0 + timedelta(seconds=wait))


def domain_example() -> list[Call]:
    """The numbers of docs/domain.md §4: 1000 answered, 860 of them within 20 s; 60 abandoned, 20 of them
    within 20 s — of which 8 before S = 5 s (3 s), 12 between 5 and 20 s (15 s) — and 40
    after 20 s (45 s)."""
    calls = [answered(f"a{i:04}", 10) for i in range(860)]
    calls += [answered(f"b{i:04}", 40) for i in range(140)]
    calls += [abandoned(f"s{i:02}", 3) for i in range(8)]
    calls += [abandoned(f"m{i:02}", 15) for i in range(12)]
    calls += [abandoned(f"l{i:02}", 45) for i in range(40)]
    return calls


# -- service level -------------------------------------------------------------------------
def test_the_five_variants_on_domains_numbers_differ() -> None:
    calls = domain_example()
    # ANSWERED_OVER_OFFERED: A≤T ÷ (A + Ab) = 860 ÷ (1000 + 60) = 860 ÷ 1060 = 81.132075…%
    aoo = service_level(calls, V.ANSWERED_OVER_OFFERED, T)
    assert aoo.value == Decimal(860) / Decimal(1060) * 100
    assert aoo.reported == Decimal("81.132075")
    # ANSWERED_OVER_ANSWERED: A≤T ÷ A = 860 ÷ 1000 = 86 %
    aoa = service_level(calls, V.ANSWERED_OVER_ANSWERED, T)
    assert aoa.value == Decimal(86)
    # ABANDONS_NEUTRAL: A≤T ÷ (A + Ab>T) = 860 ÷ (1000 + 40) = 860 ÷ 1040 = 82.692307…%
    an = service_level(calls, V.ABANDONS_NEUTRAL, T)
    assert an.value == Decimal(860) / Decimal(1040) * 100
    assert an.reported == Decimal("82.692308")
    # ABANDONS_SUCCESS: (A≤T + Ab≤T) ÷ (A + Ab) = (860 + 20) ÷ 1060 = 880 ÷ 1060 = 83.018867…%
    ab_s = service_level(calls, V.ABANDONS_SUCCESS, T)
    assert ab_s.value == Decimal(880) / Decimal(1060) * 100
    assert ab_s.reported == Decimal("83.018868")
    # SHORT_ABANDONS_SUCCESS, S = 5 s: (A≤T + Ab<S) ÷ (A + Ab) = (860 + 8) ÷ 1060 = 868 ÷ 1060 = 81.886792…%
    sas = service_level(calls, V.SHORT_ABANDONS_SUCCESS, T, S)
    assert sas.value == Decimal(868) / Decimal(1060) * 100
    assert sas.reported == Decimal("81.886792")

    values = {r.value for r in (aoo, aoa, an, ab_s, sas)}
    assert len(values) == 5
    assert aoo.formula_id == "contact.service_level" and aoo.formula_version == 4
    assert aoo.parameters == {
        "variant": "ANSWERED_OVER_OFFERED",
        "threshold_seconds": "20",
        "short_abandon_seconds": "none",
    }
    assert sas.parameters["short_abandon_seconds"] == "5"
    assert aoo.detail["numerator"] == "860" and aoo.detail["denominator"] == "1060"
    assert len({aoo.input_digest, aoa.input_digest, sas.input_digest}) == 3  # the parameters are digested


def test_short_abandons_leave_offered_and_abandoned_when_s_is_set() -> None:
    calls = domain_example()
    # With S = 5 s the 8 short abandons are neither offered nor abandoned: Ab = 52, Ab≤T = 12, Ab>T = 40.
    # ANSWERED_OVER_OFFERED: 860 ÷ (1000 + 52) = 860 ÷ 1052 = 81.749049…%
    assert service_level(calls, V.ANSWERED_OVER_OFFERED, T, S).reported == Decimal("81.749049")
    # ABANDONS_SUCCESS: (860 + 12) ÷ 1052 = 872 ÷ 1052 = 82.889733…%
    assert service_level(calls, V.ABANDONS_SUCCESS, T, S).reported == Decimal("82.889734")
    # ABANDONS_NEUTRAL: the short abandons were within T anyway: 860 ÷ 1040, unchanged.
    assert service_level(calls, V.ABANDONS_NEUTRAL, T, S).value == Decimal(860) / Decimal(1040) * 100
    # ANSWERED_OVER_ANSWERED ignores abandons: 86 %.
    assert service_level(calls, V.ANSWERED_OVER_ANSWERED, T, S).value == Decimal(86)


def test_within_t_is_inclusive_and_exact_to_the_microsecond() -> None:
    calls = [
        answered("on-the-dot", 20),  # 20 s ≤ 20 s: within
        answered("just-over", 20.000001),  # 20.000001 s > 20 s: not within, no rounding to whole seconds
        abandoned("ab-at-t", 20),  # abandoned at exactly T: Ab≤T
        abandoned("ab-at-s", 5),  # abandoned at exactly S: not a short abandon (Ab<S is strict)
    ]
    # A = 2, A≤T = 1, Ab = 2, Ab≤T = 2, Ab>T = 0, Ab<S = 0
    assert service_level(calls, V.ANSWERED_OVER_ANSWERED, T).value == Decimal(50)  # 1 ÷ 2
    assert service_level(calls, V.ABANDONS_NEUTRAL, T).value == Decimal(50)  # 1 ÷ (2 + 0)
    assert service_level(calls, V.ABANDONS_SUCCESS, T).value == Decimal(75)  # (1 + 2) ÷ 4
    assert service_level(calls, V.SHORT_ABANDONS_SUCCESS, T, S).value == Decimal(25)  # (1 + 0) ÷ 4
    # a partial minute: T = 1 min, waits of 59.5 s and 60.5 s
    minute = [answered("x", 59.5), answered("y", 60.5)]
    assert service_level(minute, V.ANSWERED_OVER_ANSWERED, timedelta(minutes=1)).value == Decimal(50)


def test_service_level_zero_denominators_are_undefined() -> None:
    for variant in V:
        r = service_level([], variant, T, S)
        assert r.value is None and r.reported is None and r.undefined
    only_abandons = [abandoned("a", 3), abandoned("b", 10)]
    assert service_level(only_abandons, V.ANSWERED_OVER_ANSWERED, T).value is None  # A = 0
    assert service_level(only_abandons, V.ABANDONS_NEUTRAL, T).value is None  # A + Ab>T = 0
    assert service_level(only_abandons, V.ANSWERED_OVER_OFFERED, T).value == Decimal(0)  # 0 ÷ 2


def test_service_level_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="needs the short-abandon"):
        service_level([], ServiceLevelVariant.SHORT_ABANDONS_SUCCESS, T)
    with pytest.raises(ValueError):
        service_level([], "WITHIN_REASON", T)
    assert service_level([answered("a", 1)], "ANSWERED_OVER_ANSWERED", T).value == Decimal(100)  # a plain string works


# -- abandonment -----------------------------------------------------------------------------
def test_abandonment_rate() -> None:
    calls = domain_example()
    # S unset: Ab ÷ O = 60 ÷ 1060 = 5.660377…%
    r = abandonment_rate(calls)
    assert r.value == Decimal(60) / Decimal(1060) * 100
    assert r.reported == Decimal("5.660377")
    # S = 5 s: (Ab − Ab<S) ÷ (O − Ab<S) = (60 − 8) ÷ (1060 − 8) = 52 ÷ 1052 = 4.942965…%
    r = abandonment_rate(calls, S)
    assert r.value == Decimal(52) / Decimal(1052) * 100
    assert r.reported == Decimal("4.942966")
    assert r.detail["short_abandoned"] == "8" and r.parameters == {"short_abandon_seconds": "5"}


def test_abandonment_rate_counts_calls_neither_answered_nor_abandoned_as_offered() -> None:
    calls = [answered("a", 5), abandoned("b", 30), Call("c", T0)]  # c: still queued / transferred out
    # O = 3, Ab = 1: 1 ÷ 3 = 33.333333…%
    assert abandonment_rate(calls).reported == Decimal("33.333333")
    # … but the service-level variants use the A + Ab of docs/domain.md: 1 ÷ (1 + 1) = 50 %
    r = service_level(calls, ServiceLevelVariant.ANSWERED_OVER_OFFERED, T)
    assert r.value == Decimal(50) and r.detail["other"] == "1"


def test_abandonment_rate_zero_denominator() -> None:
    assert abandonment_rate([]).value is None
    # every call a short abandon: O − Ab<S = 2 − 2 = 0
    r = abandonment_rate([abandoned("a", 1), abandoned("b", 2)], S)
    assert r.value is None and r.undefined


# -- ASA ----------------------------------------------------------------------------------------
def test_asa_includes_zero_waits_and_excludes_abandons() -> None:
    calls = [answered("a", 0), answered("b", 12.5), answered("c", 30.25), abandoned("d", 50)]
    # (0 + 12.5 + 30.25) ÷ 3 = 42.75 ÷ 3 = 14.25 s; the abandoned call's 50 s does not count
    r = asa(calls)
    assert r.value == Decimal("14.25")
    assert r.formula_id == "contact.asa" and r.detail == {
        "unit": "seconds",
        "answered": "3",
        "total_wait_seconds": "42.75",
    }


def test_asa_partial_seconds_and_no_answered_call() -> None:
    # waits of 1 µs and 2 µs: (0.000001 + 0.000002) ÷ 2 = 0.0000015 s
    assert asa([answered("a", 0.000001), answered("b", 0.000002)]).value == Decimal("0.0000015")
    r = asa([abandoned("x", 3)])
    assert r.value is None and r.undefined == "no answered call"


# -- AHT ---------------------------------------------------------------------------------------
def test_aht() -> None:
    calls = [
        answered("a", 5, talk_seconds=Decimal(300), hold_seconds=Decimal(30), after_call_seconds=Decimal(60)),
        answered("b", 5, talk_seconds=Decimal(120), after_call_seconds=Decimal("45.5")),
        abandoned("c", 40),
    ]
    # (300 + 30 + 60) + (120 + 0 + 45.5) = 390 + 165.5 = 555.5 over 2 handled calls = 277.75 s
    r = aht(calls)
    assert r.value == Decimal("277.75") and r.detail["handled"] == "2"
    assert aht([abandoned("c", 40)]).value is None


def test_calls_refuse_floats_and_contradictions() -> None:
    with pytest.raises(TypeError):
        Call("a", T0, answered_at=T0, talk_seconds=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Call("a", T0, answered_at=T0, abandoned_at=T0)
    with pytest.raises(ValueError):
        Call("a", T0, answered_at=T0 - timedelta(seconds=1))
    with pytest.raises(ValueError):
        Call("a", datetime(2026, 3, 2, 9, 0))  # naive
    assert Call("a", T0, talk_seconds=3).talk_seconds == Decimal(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="appears twice"):
        asa([answered("a", 1), answered("a", 2)])


# -- FCR ---------------------------------------------------------------------------------------
def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def contact(call_id: str, at: float, customer: str, reason: str, flag: bool | None) -> Call:
    return Call(call_id, day(at), answered_at=day(at), customer_id=customer, reason=reason, resolved_first_contact=flag)


def fcr_contacts() -> list[Call]:
    return [
        contact("c1-bill-d0", 0, "C1", "billing", True),  # first contact
        contact("c1-bill-d3", 3, "C1", "billing", True),  # repeat of d0 (3 ≤ 7 days)
        contact("c1-bill-d10", 10, "C1", "billing", True),  # 10 days after d0: a new first contact
        contact("c1-router-d1", 1, "C1", "router", True),  # first contact (another reason)
        contact("c2-bill-d2", 2, "C2", "billing", None),  # first contact, unflagged
        contact("c2-bill-d9", 9, "C2", "billing", True),  # exactly 7 days after d2: a repeat (inclusive)
        contact("c3-bill-d4", 4, "C3", "billing", True),  # first contact
        Call("c3-abandoned-d5", day(5), abandoned_at=day(5), customer_id="C3", reason="billing"),  # not a contact
    ]


def test_first_contacts_are_anchored_episodes() -> None:
    assert first_contacts(fcr_contacts()) == {
        "c1-bill-d0": ["c1-bill-d3"],
        "c1-bill-d10": [],
        "c1-router-d1": [],
        "c2-bill-d2": ["c2-bill-d9"],
        "c3-bill-d4": [],
    }
    # every 6 days: d0 first, d6 its repeat, d12 (12 days after d0) first again, d18 its repeat
    every6 = [contact(f"d{n}", n, "C", "r", None) for n in (0, 6, 12, 18)]
    assert first_contacts(every6) == {"d0": ["d6"], "d12": ["d18"]}


ALL_DAYS = Interval(day(-30), day(60))


def test_fcr_flagged_and_inferred() -> None:
    calls = fcr_contacts()
    # FLAGGED: first contacts d0 ✓, d10 ✓, router-d1 ✓, c2-d2 (None → not resolved), c3-d4 ✓ → 4 ÷ 5 = 80 %
    r = fcr(calls, FcrMethod.FLAGGED, window=ALL_DAYS)
    assert r.value == Decimal(80) and r.detail["unflagged"] == "1" and r.detail["first_contacts"] == "5"
    # REPEAT_CONTACT: d0 and c2-d2 had a repeat; d10, router-d1, c3-d4 did not → 3 ÷ 5 = 60 %
    r = fcr(calls, "REPEAT_CONTACT", window=ALL_DAYS)
    assert r.value == Decimal(60) and r.detail["repeated"] == "2" and r.formula_version == 5
    assert r.parameters["method"] == "REPEAT_CONTACT" and r.parameters["repeat_window_seconds"] == "604800"
    assert fcr(calls, FcrMethod.FLAGGED, version=1).value == Decimal(80)
    v1 = fcr(calls, "REPEAT_CONTACT", version=1)
    assert v1.value == Decimal(60) and v1.detail["repeat_contacts"] == "2" and v1.formula_version == 1


def test_fcr_v1_window_and_pending_first_contacts() -> None:
    """v1 (kept for the windows recorded with it): the first contacts that arrived in the window,
    as of `as_of`."""
    calls = fcr_contacts()
    # window [d1, d11): first contacts router-d1 ✓, c2-d2 ✗, c3-d4 ✓, d10 ✓ (d3 and d9 are repeats,
    # d0 is before the window) → 3 ÷ 4 = 75 %
    w = Interval(day(1), day(11))
    assert fcr(calls, FcrMethod.REPEAT_CONTACT, window=w, version=1).value == Decimal(75)
    # as of d12, d10's window (to d17) is still open and it has no repeat yet: pending.
    # d0 ✗, router-d1 ✓, c2-d2 ✗, c3-d4 ✓ (window closed d11) → 2 ÷ 4 = 50 %
    r = fcr(calls, FcrMethod.REPEAT_CONTACT, as_of=day(12), version=1)
    assert r.value == Decimal(50) and r.detail["pending"] == "1"
    # a 2-day repeat window: d3 (3 days after d0) and c2-d9 (7 days after d2) are no longer repeats, so all
    # 7 contacts are first contacts and none had a repeat → 7 ÷ 7 = 100 %
    assert fcr(calls, FcrMethod.REPEAT_CONTACT, timedelta(days=2), version=1).value == Decimal(100)
    # as of its end, v1 never counts the first contacts of a window's last 7 days without a repeat:
    # [d1, d11) as of d11 leaves d10 (to d17) pending, and no later window counts it (it arrived in this one).
    r = fcr(calls, FcrMethod.REPEAT_CONTACT, window=w, as_of=day(11), version=1)
    assert r.detail["pending"] == "1" and r.value == Decimal(200) / 3


def test_fcr_v2_judges_each_first_contact_in_the_window_its_outcome_became_known() -> None:
    """v2: a first contact is decided at its first repeat (not resolved) or, without one, when its
    repeat window has passed (resolved, at arrival + 7 days: a repeat then would still have been
    one); it counts in the window holding that instant, [start, end), once it is past."""
    calls = fcr_contacts()
    # decisions: d0 → d3 ✗ (repeat), router-d1 → d8 ✓, c2-d2 → d9 ✗ (repeat), c3-d4 → d11 ✓, d10 → d17 ✓
    w = Interval(day(1), day(11))
    r = fcr(calls, FcrMethod.REPEAT_CONTACT, window=w, as_of=day(11))
    assert r.detail["first_contacts"] == "3" and r.detail["resolved"] == "1" and r.detail["pending"] == "0"
    assert r.value == Decimal(100) / 3
    # c3-d4's window passes at d11 exactly: the next window's (half-open ends), with d10's at d17.
    nxt = fcr(calls, FcrMethod.REPEAT_CONTACT, window=Interval(day(11), day(18)), as_of=day(18))
    assert nxt.value == Decimal(100) and nxt.detail["first_contacts"] == "2"
    # open, as of d8: router-d1's window passes at d8 — not yet past, so pending with c2-d2's (d9)
    r = fcr(calls, FcrMethod.REPEAT_CONTACT, window=w, as_of=day(8))
    assert r.value == Decimal(0) and r.detail["first_contacts"] == "1" and r.detail["pending"] == "2"
    r = fcr(calls, FcrMethod.REPEAT_CONTACT, window=w, as_of=day(8) + timedelta(microseconds=1))
    assert r.value == Decimal(50) and r.detail["pending"] == "1"
    # consecutive windows count every first contact exactly once
    weeks = [Interval(day(n), day(n + 7)) for n in range(-7, 21, 7)]
    assert sum(int(fcr(calls, "REPEAT_CONTACT", window=x).detail["first_contacts"]) for x in weeks) == 5
    # FLAGGED: decided on arrival — [d1, d11): router-d1 ✓, c2-d2 (unflagged ✗), c3-d4 ✓, d10 ✓ → 75 %
    r = fcr(calls, FcrMethod.FLAGGED, window=w, as_of=day(11))
    assert r.value == Decimal(75) and r.detail["unflagged"] == "1"


def test_fcr_v2_digest_is_the_outcomes_of_the_window() -> None:
    """A closed window's digest changes only when an outcome in it does: a contact after its end,
    or one that decides nothing in it, leaves it (v1 digested every contact passed)."""
    calls = fcr_contacts()
    w = Interval(day(1), day(11))
    later = [
        *calls,
        contact("c4-bill-d20", 20, "C4", "billing", True),
        contact("c1-router-d12", 12, "C1", "router", None),
    ]
    before = fcr(calls, FcrMethod.REPEAT_CONTACT, window=w, as_of=day(11))
    assert fcr(later, FcrMethod.REPEAT_CONTACT, window=w, as_of=day(11)).input_digest == before.input_digest
    v1 = fcr(calls, FcrMethod.REPEAT_CONTACT, window=w, as_of=day(11), version=1)
    assert fcr(later, FcrMethod.REPEAT_CONTACT, window=w, as_of=day(11), version=1).input_digest != v1.input_digest
    # a repeat of router-d1 inside its window (d5) turns it from resolved (d8) to not resolved (d5)
    repeated = [*calls, contact("c1-router-d5", 5, "C1", "router", None)]
    after = fcr(repeated, FcrMethod.REPEAT_CONTACT, window=w, as_of=day(11))
    assert after.input_digest != before.input_digest and after.value == Decimal(0)
    with pytest.raises(ValueError, match="window"):
        fcr(calls, FcrMethod.REPEAT_CONTACT)
    with pytest.raises(ValueError, match="versions"):
        fcr(calls, FcrMethod.REPEAT_CONTACT, window=w, version=6)
    with pytest.raises(ValueError, match="twice"):
        fcr([calls[0], calls[0]], FcrMethod.REPEAT_CONTACT, window=w)


def test_fcr_v4_and_v5_digest_the_outcomes_in_the_order_they_became_known() -> None:
    """v4 deals the counted outcomes' records into the 64 buckets in the order of their decision
    (then first contact's id); v5 likewise, each bucket in runs by the hour (UTC) the outcomes
    became known in; v3 by first contact's id: the same value and detail. Each worked out as an
    auditor would, from the records."""
    import json
    import zlib
    from hashlib import sha256

    from accord_metrics.formulas import common
    from accord_metrics.formulas.contact import group_outcomes, utc_record

    calls = [*fcr_contacts(), contact("a0-c5-d2", 2, "C5", "billing", True)]  # first by id, decided d9
    # Two repeats in one hour of d6 (decided then: their first contacts, of d2, not resolved).
    calls += [contact("h-c6-d2", 2, "C6", "mail", None), contact("h-c6-d6", 6, "C6", "mail", None)]
    calls += [contact("h-c7-d2", 2.5, "C7", "mail", None), contact("h-c7-d6", 6.01, "C7", "mail", None)]
    # And 250 first contacts with no repeat, ≈ 4 an hour: decided a week later, over ≈ 60 hours.
    calls += [contact(f"m{i:03d}", 1 + i / 100, f"M{i}", "mail", True) for i in range(250)]
    w = Interval(day(1), day(11))
    v5 = fcr(calls, FcrMethod.REPEAT_CONTACT, window=w, as_of=day(11))
    v4 = fcr(calls, FcrMethod.REPEAT_CONTACT, window=w, as_of=day(11), version=4)
    v3 = fcr(calls, FcrMethod.REPEAT_CONTACT, window=w, as_of=day(11), version=3)
    assert (v5.formula_version, v4.formula_version, v3.formula_version) == (5, 4, 3)
    assert len({v5.input_digest, v4.input_digest, v3.input_digest}) == 3
    assert (v5.value, v5.detail, v5.parameters) == (v4.value, v4.detail, v4.parameters)
    assert (v4.value, v4.detail, v4.parameters) == (v3.value, v3.detail, v3.parameters)

    def canonical(payload: object) -> bytes:
        return json.dumps(common._canonical(payload), sort_keys=True, separators=(",", ":")).encode()

    groups: dict[tuple[str, str], list[Call]] = {}
    for c in calls:
        if c.answered:
            groups.setdefault((c.customer_id, c.reason), []).append(c)
    counted = [
        utc_record(o)
        for g in groups.values()
        for o in group_outcomes(
            sorted(g, key=lambda c: (c.entered_queue, c.call_id)), FcrMethod.REPEAT_CONTACT, timedelta(days=7), w
        ).values()
        if o.decided < day(11)
    ]
    by_id, by_decision = (lambda r: r["call_id"]), (lambda r: (r["decided"], r["call_id"]))
    assert sorted(counted, key=by_id) != sorted(counted, key=by_decision)
    for version, order in ((3, by_id), (4, by_decision), (5, by_decision)):
        buckets: list[list[bytes]] = [[] for _ in range(64)]
        runs: list[dict[int, list[bytes]]] = [{} for _ in range(64)]
        for record in sorted(counted, key=order):
            text = canonical(record)
            buckets[zlib.crc32(text) % 64].append(text)
            hour = int(record["decided"].timestamp()) // 3600
            runs[zlib.crc32(text) % 64].setdefault(hour, []).append(text)
        if version == 5:  # each bucket: the SHA-256 of its runs' digests, the hours in order
            inputs = [
                sha256(",".join(sha256(b",".join(r[h])).hexdigest() for h in sorted(r)).encode()).hexdigest()
                if r
                else sha256(b"").hexdigest()
                for r in runs
            ]
        else:
            inputs = [sha256(b",".join(b)).hexdigest() for b in buckets]
        payload = {
            "formula_id": "contact.fcr",
            "formula_version": version,
            "inputs": inputs,
            "parameters": v5.parameters,
        }
        assert sum(len(r) > 1 for r in runs) > 32  # most buckets: several hours
        evaluated = {3: v3, 4: v4, 5: v5}[version]
        assert evaluated.input_digest == "sha256:" + sha256(canonical(payload)).hexdigest(), version


def test_fcr_no_first_contact() -> None:
    r = fcr([], FcrMethod.FLAGGED, window=ALL_DAYS)
    assert r.value is None and r.undefined == "no first contact"


# -- order and representation independence --------------------------------------------------------
SMALL = [
    answered("a", 0, customer_id="C1", reason="x", resolved_first_contact=True),
    answered("b", 25, customer_id="C1", reason="x", talk_seconds=Decimal(100)),
    answered("c", 7.5, customer_id="C2", reason="y", hold_seconds=Decimal("12.25")),
    abandoned("d", 2),
    abandoned("e", 30),
    Call("f", T0),
]


def _all(calls: list[Call]) -> list[tuple[Decimal | None, str]]:
    results = [
        asa(calls),
        abandonment_rate(calls, S),
        fcr(calls, FcrMethod.REPEAT_CONTACT, window=Interval(T0 - timedelta(days=1), T0 + timedelta(days=9))),
        fcr(calls, FcrMethod.FLAGGED, window=Interval(T0, T0 + timedelta(days=1))),
        fcr(calls, FcrMethod.REPEAT_CONTACT, version=1),
        aht(calls),
        *(service_level(calls, v, T, S) for v in ServiceLevelVariant),
    ]
    return [(r.value, r.input_digest) for r in results]


@settings(max_examples=50, deadline=None)
@given(st.permutations(SMALL))
def test_arrival_order_does_not_change_value_or_digest(shuffled: list[Call]) -> None:
    assert _all(list(shuffled)) == _all(SMALL)


def test_the_digest_depends_on_the_instant_not_its_offset() -> None:
    ams = ZoneInfo("Europe/Amsterdam")
    moved = [
        Call(
            c.call_id,
            c.entered_queue.astimezone(ams),
            None if c.answered_at is None else c.answered_at.astimezone(ams),
            None if c.abandoned_at is None else c.abandoned_at.astimezone(ams),
            c.talk_seconds,
            c.hold_seconds,
            c.after_call_seconds,
            c.customer_id,
            c.reason,
            c.resolved_first_contact,
        )
        for c in SMALL
    ]
    assert _all(moved) == _all(SMALL)
    # … and a changed input changes it
    assert asa(SMALL[:-1]).input_digest != asa(SMALL).input_digest


def test_each_input_is_encoded_once_and_the_digest_is_that_of_its_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """v1–v3 encode an input's record once (kept on the frozen input): judging a window again
    after one new call encodes only that call. v4 (whose running form keeps no record, and which
    runs over a window's calls when it closes) encodes them as it hashes them and keeps none: a
    closed month's calls would each hold one (≈ 300 B a call). The digest is the one of the
    inputs' plain UTC records, worked out by each version's rule: sorted by id (v1 in one list, v2
    bucketed), or in the order the calls arrived (v3 bucketed, v4 bucketed in runs by hour)."""
    import json
    import zlib
    from hashlib import sha256

    from accord_metrics.formulas import common, contact

    base = datetime(2026, 3, 2, 9, tzinfo=ZoneInfo("Europe/Amsterdam"))
    calls = [
        Call(
            f"c{i:03d}-é",
            # The later the id, the earlier the call, over two hours (c007 and c008 arrive together:
            # their ids decide).
            base
            + timedelta(minutes=2 * (60 - max(i, 8 if i == 7 else i)), microseconds=7 * max(i, 8 if i == 7 else i)),
            answered_at=base + timedelta(minutes=2 * (60 - i), seconds=30 + i % 40),
            talk_seconds=Decimal("1.5"),
        )
        for i in range(50, 0, -1)
    ]
    encoded: list[str] = []
    plain, write = contact.utc_record, contact.call_json

    def counting(c: Call) -> str:  # a call's record is written directly (`call_json`)
        encoded.append(c.call_id)
        return write(c)

    monkeypatch.setattr(contact, "call_json", counting)
    first = service_level(calls, "ANSWERED_OVER_OFFERED", timedelta(seconds=20))
    assert len(encoded) == 50 and all(getattr(c, "_accord_encoded_utc_record", None) is None for c in calls)
    one_more = Call("c999", base + timedelta(hours=2), abandoned_at=base + timedelta(hours=2, seconds=5))
    again = service_level([*calls, one_more], "ANSWERED_OVER_OFFERED", timedelta(seconds=20))
    assert len(encoded) == 101 and again.input_digest != first.input_digest  # each encoded again, none kept
    encoded.clear()
    for _ in range(2):
        service_level(calls, "ANSWERED_OVER_OFFERED", timedelta(seconds=20), version=3)
    service_level([*calls, one_more], "ANSWERED_OVER_OFFERED", timedelta(seconds=20), version=3)
    assert len(encoded) == 51 and encoded[50:] == ["c999"]  # v3: each once, kept on the call

    # Worked out here as an auditor would from the rule (docs/domain.md §4, "The input digest"):
    # v1 the calls' records in one list, by id; v2 those records dealt into 64 buckets by each
    # one's CRC-32 modulo 64, the list's place holding each bucket's SHA-256, and the formula
    # named; v3 as v2 with the records in the order the calls entered the queue (then by id).
    def canonical(payload: object) -> bytes:
        return json.dumps(common._canonical(payload), sort_keys=True, separators=(",", ":")).encode()

    def bucketed(records: list[dict[str, object]], version: int) -> bytes:
        buckets: list[list[bytes]] = [[] for _ in range(64)]
        for record in records:
            text = canonical(record)
            buckets[zlib.crc32(text) % 64].append(text)
        return canonical({
            "formula_id": "contact.service_level",
            "formula_version": version,
            "inputs": [sha256(b",".join(b)).hexdigest() for b in buckets],
            "parameters": first.parameters,
        })  # fmt: skip

    records = [plain(c) for c in calls]
    by_id = sorted(records, key=lambda r: r["call_id"])
    by_arrival = sorted(records, key=lambda r: (r["entered_queue"], r["call_id"]))
    assert by_arrival != by_id and [r["call_id"] for r in by_arrival[42:44]] == ["c007-é", "c008-é"]
    v1 = service_level(calls, "ANSWERED_OVER_OFFERED", timedelta(seconds=20), version=1)
    v1_payload = {"inputs": by_id, "parameters": v1.parameters}
    assert v1.input_digest == "sha256:" + sha256(canonical(v1_payload)).hexdigest()
    v2 = service_level(calls, "ANSWERED_OVER_OFFERED", timedelta(seconds=20), version=2)
    assert v2.input_digest == "sha256:" + sha256(bucketed(by_id, 2)).hexdigest()
    v3 = service_level(calls, "ANSWERED_OVER_OFFERED", timedelta(seconds=20), version=3)
    assert v3.input_digest == "sha256:" + sha256(bucketed(by_arrival, 3)).hexdigest()
    # v4: each bucket's records, still in the order the calls arrived, in runs by the hour (UTC)
    # they entered the queue in; a run's digest the SHA-256 of its records, the bucket's that of
    # its runs' digests (hex, joined by ",").
    runs: list[dict[int, list[bytes]]] = [{} for _ in range(64)]
    for record in by_arrival:
        text = canonical(record)
        hour = int(record["entered_queue"].timestamp()) // 3600
        runs[zlib.crc32(text) % 64].setdefault(hour, []).append(text)
    hexes = [",".join(sha256(b",".join(r[h])).hexdigest() for h in sorted(r)).encode() for r in runs]
    assert len({h for r in runs for h in r}) == 2  # the calls span two hours
    v4_payload = {
        "formula_id": "contact.service_level",
        "formula_version": 4,
        "inputs": [sha256(x).hexdigest() for x in hexes],
        "parameters": first.parameters,
    }
    assert first.formula_version == 4
    assert first.input_digest == "sha256:" + sha256(canonical(v4_payload)).hexdigest()
    for other in (v1, v2, v3):
        assert (first.value, first.detail, first.parameters) == (other.value, other.detail, other.parameters)


_ZONES = st.sampled_from([UTC, ZoneInfo("Europe/Amsterdam"), ZoneInfo("America/St_Johns"), ZoneInfo("Asia/Kolkata")])
_INSTANTS = st.builds(
    lambda d, tz: d.replace(tzinfo=UTC).astimezone(tz),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    _ZONES,
)
_SECONDS = st.decimals(min_value=0, max_value=10**9, allow_nan=False, allow_infinity=False, places=None)


@given(
    st.text(max_size=12),
    _INSTANTS,
    st.one_of(st.none(), st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3))),
    st.booleans(),
    st.tuples(_SECONDS, _SECONDS, st.one_of(_SECONDS, st.integers(0, 10**6))),
    st.text(max_size=8),
    st.text(max_size=8),
    st.sampled_from([None, True, False]),
)
def test_a_calls_record_written_directly_is_its_canonical_json(
    call_id: str, entered: datetime, wait: timedelta | None, answered: bool,
    seconds: tuple[Decimal, Decimal, Decimal | int], customer: str, reason: str, resolved: bool | None,
) -> None:  # fmt: skip
    """What a formula digests of a call (`call_json`, written directly, kept on the call) is
    byte for byte the generic canonical JSON of its UTC record."""
    from accord_metrics.formulas.common import canonical_json, encoded_all
    from accord_metrics.formulas.contact import call_json, utc_record

    end = None if wait is None else entered + wait
    c = Call(
        call_id, entered, end if answered else None, None if answered else end, seconds[0], seconds[1], seconds[2],
        customer, reason, resolved,
    )  # fmt: skip
    assert call_json(c) == canonical_json(utc_record(c))
    assert encoded_all([c], utc_record, call_json) == [canonical_json(utc_record(c))]


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(0), "Z"), timezone(timedelta(hours=5, minutes=30)), ZoneInfo("Europe/Amsterdam")]
        ),
    ),
    st.lists(st.integers(0, 3599), max_size=5),
)  # fmt: skip
@settings(max_examples=500)
def test_an_instants_text_by_its_hour_is_the_one_isoformat_writes(t: datetime, seconds: list[int]) -> None:
    """`utc_iso` (the records' instants, each hour's text written once) writes every instant as
    `astimezone(UTC).isoformat()` does: in UTC or not (a zero offset of another name too), whole
    seconds or not, and others of the same hour after its text is kept — also once the kept hours
    were let go."""
    from accord_metrics.formulas import common
    from accord_metrics.formulas.common import utc_iso

    in_utc = t.astimezone(UTC)
    hour = in_utc.replace(minute=0, second=0, microsecond=0)
    for u in [t, in_utc, in_utc.replace(microsecond=0), *(hour + timedelta(seconds=s) for s in seconds)]:
        assert utc_iso(u) == u.astimezone(UTC).isoformat()
    # As many hours kept as it keeps (none an instant's: beyond the year 9999): let go for the next.
    common._HOUR_TEXT.clear()
    common._HOUR_TEXT.update({10**9 + k: "?" for k in range(common._HOUR_TEXT_KEPT)})
    assert utc_iso(hour) == hour.isoformat()
    assert len(common._HOUR_TEXT) == 1
