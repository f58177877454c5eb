"""Assessment: one objective's closed evaluation turned into money (docs/domain.md §5).

Pure functions over the canonical JSON form of the agreement terms (field names as in
`accord.agreements.v1`, enums as names such as "STACKING_RULE_STACK", decimals as strings)
and of a metrics evaluation. Standard library only; every amount is a `Decimal`, never a
float (a float anywhere is refused with TypeError).

Conventions — each one is part of the contract:

Sign. Every line's `amount` is signed from the customer's side: positive = the provider
  owes the customer (credits and penalties); negative = the customer pays the provider
  (rewards, and the statement's cap and minimum adjustments, which take money back off the
  credits). A statement's `net` is the sum of every applied line, so a positive net is
  credited to the customer and a negative net is charged to it.

Rounding. There is ONE rule: half-even (banker's rounding) to the currency's minor unit
  (`MINOR_UNITS`: EUR/USD/GBP/CHF 2, JPY/KRW/ISK 0, BHD/KWD 3 …). It is applied in exactly
  one place, when a `Money` is made, and a `Money` is made once per line, from the line's
  exact result: credit = fee × percent ÷ 100 (× share), fixed penalty = amount × breaches,
  per-unit penalty = amount × chargeable units, reward = −amount, cap = fee × cap% ÷ 100
  (× share). `share` is the part of its fee period the period charges (billing's rule 2: in
  the agreement's term and not suspended; `periods.charged_share`), so a percentage is of
  the fee the period charges; without it (rule 1) of the terms' fee. Fixed and per-unit
  penalties, rewards and the minimum are stated amounts, never scaled.
  Everything before that is exact decimal arithmetic (a context that raises rather than
  rounds); everything after it (sums, the cap cut, the minimum cut, the net) adds amounts
  that are already at the minor unit, so it never rounds again. So 0.125 EUR → 0.12,
  0.135 EUR → 0.14, 1234.5 JPY → 1234, and two lines of 0.125 EUR total 0.24, not 0.25.

Currencies. Money of two currencies is never added, subtracted or compared: that raises
  CurrencyMismatchError. Penalty and reward amounts are in the fee's currency (as the
  terms say); a statement is in its fee's currency and refuses an assessment in another.

What is assessed (`assess`):
- Only a closed window: an evaluation with `closed` false, or status AT_RISK (which only
  an open window has), raises. NO_DATA is the metrics service's verdict after it applied
  the objective's no-data policy ("counts as met/breached" has already become MET or
  BREACHED), so a NO_DATA evaluation is not counted and earns nothing.
- CREDIT: the band the measured value falls in (`matching_tier`) earns credit_percent of
  the period's fee (× share, see Rounding), whatever the status — the bands are the contract's statement of what a
  value earns (a 0 % band gives a 0.00 line that still names its band). No value (e.g. no
  data counted as breached) → no band, no credit line.
- FIXED_PENALTY: `amount` once per BREACHED evaluation (one breached window is one breach).
- PER_UNIT_PENALTY: only when BREACHED: amount × max(0, started units − grace_units),
  where the units beyond the target are rounded UP to whole started units first and the
  grace is subtracted after (a fractional grace leaves a fractional count: 3 started
  hours − 0.5 grace = 2.5 units). See `units_beyond_target` for how units are found.
- REWARD: when the status is MET and the value strictly beats `reward.stretch_target` in
  the objective's direction (> for COMPARATOR_AT_LEAST, < for COMPARATOR_AT_MOST; equal to
  the stretch target earns nothing): the line is −amount (paid by the customer).
- Stacking (consequences.stacking) is over the CREDIT and penalty lines of one objective:
  STACK — they all apply and add up; HIGHEST_APPLIES — only the highest (rounded) amount
  applies, ties going to the first in the order CREDIT, then the penalties in the terms'
  order; the others stay on the assessment with applied=False and say what superseded
  them. Rewards are never part of stacking. When the stacking rule is unspecified and more
  than one non-zero credit/penalty line competes, `assess` raises instead of guessing
  (with at most one non-zero line both rules agree, so it is not needed).

Statement totals (`statement_totals`), in this order:
1. credits = Σ applied CREDIT and penalty lines of all the period's assessments ("credits"
   are everything the provider owes: credit tiers and penalties alike);
2. cap: when consequences.cap_percent is set, cap = fee × cap% ÷ 100 (× share; rounded once);
   credits above it are cut; the CAP line shows −cut (0.00 when the cap is not reached);
   an empty cap_percent means no cap;
3. minimum: when consequences.minimum_amount is set and not zero, it applies to the
   period total after the cap — not to each line: a capped total strictly below the
   minimum is not issued (the MINIMUM line shows −total); a total equal to it is issued.
   The minimum is a threshold, compared exactly as written;
4. rewards are netted after the cap and the minimum: they are neither capped nor
   subject to the minimum, and may make the net negative (the customer pays).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import (
    ROUND_CEILING,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time the module keeps to the standard library
    from accord_kit.evaluation import Evaluation

# ISO 4217 minor units (digits after the decimal point) of the currencies Accord knows; the
# same set the agreements service accepts for a fee.
MINOR_UNITS: dict[str, int] = {
    "EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2, "HUF": 2,
    "CAD": 2, "AUD": 2, "NZD": 2, "JPY": 0, "CNY": 2, "INR": 2, "SGD": 2, "HKD": 2, "ZAR": 2, "BRL": 2,
    "MXN": 2, "KRW": 0, "ISK": 0, "BHD": 3, "KWD": 3,
}  # fmt: skip

# Line kinds.
CREDIT = "CREDIT"
FIXED_PENALTY = "FIXED_PENALTY"
PER_UNIT_PENALTY = "PER_UNIT_PENALTY"
REWARD = "REWARD"
CAP = "CAP"
MINIMUM = "MINIMUM"
OWED_KINDS = frozenset({CREDIT, FIXED_PENALTY, PER_UNIT_PENALTY})  # what the cap calls "credits"

# Evaluation statuses (as the metrics service records them; "EVALUATION_STATUS_<X>" is accepted too).
MET, BREACHED, NO_DATA, AT_RISK = "MET", "BREACHED", "NO_DATA", "AT_RISK"
STATUSES = (MET, BREACHED, NO_DATA, AT_RISK)

STACK = "STACKING_RULE_STACK"
HIGHEST_APPLIES = "STACKING_RULE_HIGHEST_APPLIES"
AT_LEAST = "COMPARATOR_AT_LEAST"
AT_MOST = "COMPARATOR_AT_MOST"

PERCENT_METRICS = frozenset(
    {
        "METRIC_AVAILABILITY_TIME",
        "METRIC_AVAILABILITY_REQUESTS",
        "METRIC_ABANDONMENT_RATE",
        "METRIC_SERVICE_LEVEL",
        "METRIC_FIRST_CONTACT_RESOLUTION",
        "METRIC_TICKET_RESPONSE",
        "METRIC_TICKET_RESOLUTION",
        "METRIC_TASK_TURNAROUND",
        "METRIC_CLOSE_RATE",
        "METRIC_MARKETING_REVENUE_SHARE",
        "METRIC_FOLLOW_UP_SPEED",
    }
)
# Metrics whose value is a duration, with the length of their unit in seconds.
DURATION_METRICS: dict[str, Decimal] = {
    "METRIC_MTTR": Decimal(60),  # minutes
    "METRIC_MTBF": Decimal(3600),  # hours
    "METRIC_ASA": Decimal(1),  # seconds
    "METRIC_AVERAGE_HANDLE_TIME": Decimal(1),  # seconds
}
# Per-unit penalty units that are durations, in seconds ("hours" etc. are accepted too).
TIME_UNITS: dict[str, Decimal] = {
    "second": Decimal(1),
    "minute": Decimal(60),
    "hour": Decimal(3600),
    "day": Decimal(86400),
}
PERCENT_POINT = "percent_point"

HUNDRED = Decimal(100)
ZERO = Decimal(0)

# Arithmetic before a line is rounded is exact: anything that would round raises instead.
_EXACT = Context(
    prec=100,
    rounding=ROUND_HALF_EVEN,
    Emax=999_999,
    Emin=-999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)
# A product with a period's charged share (a ratio of durations, seldom a terminating
# decimal), to 60 digits: far finer than any minor unit, so the one rounding is unchanged.
_SHARE = Context(prec=60, rounding=ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999, traps=[InvalidOperation])
# The one rounding: half-even, to the minor unit (used by `round_half_even` only).
_ROUNDING = Context(prec=100, rounding=ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999, traps=[InvalidOperation])


class AssessmentError(ValueError):
    """Terms or an evaluation that cannot be turned into money as they stand."""


class UnknownCurrencyError(AssessmentError):
    """A currency that is not in MINOR_UNITS."""


class CurrencyMismatchError(AssessmentError):
    """Two currencies met in one sum, comparison or statement: they are never mixed."""


class UnitsUnavailableError(AssessmentError):
    """A per-unit penalty whose units cannot be derived: the evaluation must give `units`."""


# -- money ----------------------------------------------------------------------------------


def minor_unit(currency: str) -> int:
    """Digits after the decimal point of `currency` (ISO 4217)."""
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise UnknownCurrencyError(f"unknown currency {currency!r} (known: {', '.join(sorted(MINOR_UNITS))})") from None


def round_half_even(amount: Decimal, currency: str) -> Decimal:
    """THE rounding rule: half-even to the currency's minor unit (0.125 EUR → 0.12,
    0.135 EUR → 0.14, 2.5 JPY → 2). A negative zero comes back as zero."""
    if isinstance(amount, float):
        raise TypeError("amounts are Decimal, never float")
    quantum = Decimal((0, (1,), -minor_unit(currency)))
    rounded = amount.quantize(quantum, rounding=ROUND_HALF_EVEN, context=_ROUNDING)
    return rounded.copy_abs() if rounded.is_zero() else rounded


@dataclass(frozen=True)
class Money:
    """An amount in one currency, always at the currency's minor unit: the constructor
    applies `round_half_even`, so every Money is already rounded. Adding, subtracting or
    comparing two currencies raises CurrencyMismatchError."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        amount: Any = self.amount
        if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
            raise TypeError(f"a Money amount is a Decimal, never {type(amount).__name__} ({amount!r})")
        d = Decimal(amount)
        if not d.is_finite():
            raise AssessmentError(f"a Money amount must be finite, not {d}")
        object.__setattr__(self, "amount", round_half_even(d, self.currency))

    @classmethod
    def of(cls, value: str | Decimal | int, currency: str) -> Money:
        """Money from a decimal string (as the terms hold amounts), a Decimal or an int."""
        return cls(_parse_decimal(value, "amount"), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(ZERO, currency)

    @classmethod
    def total(cls, items: Iterable[Money], currency: str) -> Money:
        """The sum of `items` (all in `currency`; zero for none)."""
        result = cls.zero(currency)
        for item in items:
            result = result + item
        return result

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"Money combines only with Money, not {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatchError(
                f"{self} and {other}: amounts in different currencies are never mixed in one total"
            )

    def __add__(self, other: Money) -> Money:
        self._same(other)
        with localcontext(_EXACT):
            return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        with localcontext(_EXACT):
            return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(self.amount.copy_negate(), self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.amount >= other.amount

    def is_zero(self) -> bool:
        return self.amount.is_zero()

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One amount with how it was reached. `amount` is signed (see the module's sign
    convention) and rounded; `applied` is False for a line superseded under
    HIGHEST_APPLIES (it is shown, but is not in any total)."""

    kind: str
    amount: Money
    derivation: str
    applied: bool = True
    band: dict[str, Any] | None = None  # CREDIT: the credit tier matched
    units: Decimal | None = None  # PER_UNIT_PENALTY: the chargeable units (started − grace)


@dataclass(frozen=True)
class Assessment:
    """One objective's closed window in money."""

    objective_id: str
    status: str
    value: Decimal | None
    currency: str
    stacking: str
    band: dict[str, Any] | None
    lines: tuple[Line, ...]
    notes: tuple[str, ...] = ()

    @property
    def credits(self) -> Money:
        """Applied CREDIT and penalty lines: what the provider owes for this objective (≥ 0)."""
        return Money.total((ln.amount for ln in self.lines if ln.applied and ln.kind in OWED_KINDS), self.currency)

    @property
    def rewards(self) -> Money:
        """Applied REWARD lines (≤ 0: the customer pays)."""
        return Money.total((ln.amount for ln in self.lines if ln.applied and ln.kind == REWARD), self.currency)

    @property
    def net(self) -> Money:
        return self.credits + self.rewards


@dataclass(frozen=True)
class Totals:
    """A period's statement totals. `net` = credits_issued + rewards = the sum of every
    applied assessment line plus the CAP and MINIMUM lines."""

    currency: str
    credits_before_cap: Money
    cap: Money | None  # None: no cap
    cap_cut: Money  # ≥ 0, taken off by the cap
    credits_after_cap: Money
    minimum: Money | None  # None: no minimum
    minimum_cut: Money  # ≥ 0, not issued for being under the minimum
    credits_issued: Money
    rewards: Money  # ≤ 0
    net: Money
    lines: tuple[Line, ...]  # CAP and MINIMUM adjustments (amount = −cut)


@dataclass(frozen=True)
class UnitsBeyond:
    """Units beyond the target for a per-unit penalty: `started` is whole (rounded up)."""

    unit: str
    started: Decimal
    derivation: str


# -- bands ----------------------------------------------------------------------------------


def matching_tier(value: Decimal, tiers: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The credit tier whose band holds `value`, or None. Comparisons are exact decimals;
    `lower`/`upper` are decimal strings, an empty (or absent) bound is open (−∞ / +∞);
    `lower_inclusive`/`upper_inclusive` say whether the bound itself is in the band (absent
    = false, as canonical JSON omits false). Bands may not overlap: a value in two raises."""
    value = _as_value(value, "value")
    found: list[int] = []
    for i, tier in enumerate(tiers):
        if _in_band(value, tier, f"credit_tiers[{i}]"):
            found.append(i)
    if len(found) > 1:
        raise AssessmentError(f"value {value} lies in overlapping bands credit_tiers{found}")
    return tiers[found[0]] if found else None


def describe_band(tier: Mapping[str, Any]) -> str:
    """E.g. "≥ 99.0 and < 99.9 → 10 %"."""
    parts = []
    if tier.get("lower") not in (None, ""):
        parts.append(f"{'≥' if tier.get('lower_inclusive') else '>'} {tier['lower']}")
    if tier.get("upper") not in (None, ""):
        parts.append(f"{'≤' if tier.get('upper_inclusive') else '<'} {tier['upper']}")
    return f"{' and '.join(parts) or 'any value'} → {tier.get('credit_percent') or '0'} %"


def _in_band(value: Decimal, tier: Mapping[str, Any], field: str) -> bool:
    lower = _optional(tier.get("lower"), f"{field}.lower")
    upper = _optional(tier.get("upper"), f"{field}.upper")
    if lower is not None and (value < lower or (value == lower and not tier.get("lower_inclusive"))):
        return False
    return not (upper is not None and (value > upper or (value == upper and not tier.get("upper_inclusive"))))


# -- units beyond the target ----------------------------------------------------------------


def units_beyond_target(objective: Mapping[str, Any], evaluation: Mapping[str, Any], unit: str) -> UnitsBeyond:
    """How many started `unit`s the evaluation is beyond the objective's target.

    In order:
    1. explicit: `evaluation["units"]` — a decimal (string), used for every per-unit
       penalty, or a mapping {unit: decimal} used for the penalty with that unit (a unit
       missing from the mapping falls through to 2–4). Must not be negative.
    2. availability, time-based (METRIC_AVAILABILITY_TIME) with a time unit
       (second, minute, hour, day): from the evaluation's detail as the metrics service
       records it, `detail.eligible_seconds` and `detail.downtime_seconds`:
       allowed downtime = eligible × (100 − target) ÷ 100;
       beyond = max(0, downtime − allowed) seconds; units = beyond ÷ unit length.
    3. "percent_point" on a percentage metric: the shortfall from the target in points,
       target − value (AT_LEAST) or value − target (AT_MOST), at least 0.
    4. a time unit on a duration metric (MTTR minutes, MTBF hours, ASA and AHT seconds):
       the shortfall in the metric's unit, converted to `unit`.
    Otherwise UnitsUnavailableError. The result is rounded UP to whole started units
    (exactly 1 h beyond = 1 unit; 1 h and 1 s = 2)."""
    name = _unit_name(unit)
    override = evaluation.get("units")
    if isinstance(override, Mapping):
        override = override.get(unit, override.get(name))
    if override not in (None, ""):
        raw = _parse_decimal(override, "evaluation.units")
        if raw < 0:
            raise AssessmentError(f"evaluation.units must not be negative (got {raw})")
        started = raw.to_integral_value(rounding=ROUND_CEILING)
        return UnitsBeyond(name, started, f"{raw} {name}(s) given by the evaluation → {started} started")
    metric = objective.get("metric") or ""
    oid = objective.get("objective_id") or ""
    detail = evaluation.get("detail") or {}
    value = _optional(evaluation.get("value"), "evaluation.value")
    with localcontext(_EXACT):
        if (
            name in TIME_UNITS
            and metric == "METRIC_AVAILABILITY_TIME"
            and detail.get("eligible_seconds") not in (None, "")
            and detail.get("downtime_seconds") not in (None, "")
        ):
            target = _parse_decimal(objective.get("target"), "objective.target")
            eligible = _parse_decimal(detail["eligible_seconds"], "evaluation.detail.eligible_seconds")
            downtime = _parse_decimal(detail["downtime_seconds"], "evaluation.detail.downtime_seconds")
            allowed = eligible * (HUNDRED - target) / HUNDRED
            beyond = max(ZERO, downtime - allowed)
            started = _started(beyond, TIME_UNITS[name])
            return UnitsBeyond(
                name,
                started,
                f"downtime {_plain(downtime)} s − allowed {_plain(allowed)} s"
                f" ({_plain(eligible)} s eligible × (100 − {target}) ÷ 100) = {_plain(beyond)} s beyond target"
                f" = {_ratio_text(beyond, TIME_UNITS[name])} {name}(s) → {started} started",
            )
        if name == PERCENT_POINT and metric in PERCENT_METRICS and value is not None:
            target = _parse_decimal(objective.get("target"), "objective.target")
            shortfall = _shortfall(objective, value, target)
            started = _started(shortfall, Decimal(1))
            return UnitsBeyond(
                name,
                started,
                f"value {value} is {shortfall} point(s) short of target {target} → {started} started",
            )
        if name in TIME_UNITS and metric in DURATION_METRICS and value is not None:
            target = _parse_decimal(objective.get("target"), "objective.target")
            native = DURATION_METRICS[metric]
            shortfall_s = _shortfall(objective, value, target) * native
            started = _started(shortfall_s, TIME_UNITS[name])
            return UnitsBeyond(
                name,
                started,
                f"value {value} vs target {target} ({native} s each): {_plain(shortfall_s)} s beyond target"
                f" = {_ratio_text(shortfall_s, TIME_UNITS[name])} {name}(s) → {started} started",
            )
    raise UnitsUnavailableError(
        f"objective {oid!r}: cannot derive {unit!r} units beyond the target of {metric or 'its metric'}"
        f" from this evaluation; give the evaluation explicit `units`"
    )


def _unit_name(unit: str) -> str:
    name = (unit or "").strip().lower().replace(" ", "_")
    if name not in TIME_UNITS and name != PERCENT_POINT and name.endswith("s"):
        singular = name[:-1]
        if singular in TIME_UNITS or singular == PERCENT_POINT:
            return singular
    return name


def _started(quantity: Decimal, unit_length: Decimal) -> Decimal:
    """Whole started units in `quantity` (≥ 0), exactly: ⌈quantity ÷ unit_length⌉."""
    with localcontext(_EXACT):
        whole, rest = divmod(quantity, unit_length)
        return whole + (1 if rest > 0 else 0)


def _shortfall(objective: Mapping[str, Any], value: Decimal, target: Decimal) -> Decimal:
    comparator = objective.get("comparator")
    with localcontext(_EXACT):
        if comparator == AT_LEAST:
            return max(ZERO, target - value)
        if comparator == AT_MOST:
            return max(ZERO, value - target)
    raise AssessmentError(f"objective.comparator must be {AT_LEAST} or {AT_MOST}, not {comparator!r}")


def _ratio_text(a: Decimal, b: Decimal) -> str:
    """a ÷ b for a derivation only: exact when it is, else "≈" and 6 decimals."""
    with localcontext(Context(prec=100, traps=[InvalidOperation, DivisionByZero])) as ctx:
        q = a / b
        if not ctx.flags[Inexact]:
            return _plain(q)
        return f"≈ {_plain(q.quantize(Decimal('0.000001'), rounding=ROUND_HALF_EVEN))}"


def _plain(d: Decimal) -> str:
    """A decimal for a derivation, without trailing zeros or exponent ("2592", "2.28")."""
    return format(d.normalize(context=_ROUNDING), "f")


# -- assessing one objective ----------------------------------------------------------------


def assess(
    objective: Mapping[str, Any],
    evaluation: Evaluation | Mapping[str, Any],
    fee: Mapping[str, Any],
    consequences: Mapping[str, Any],
    share: Fraction | None = None,
) -> Assessment:
    """The money one objective's closed window earns (see the module docstring).

    `share`: the share of its fee period the period charges (in term, not suspended), when
    percentages are of the fee the period charges (billing's rule 2): a credit is then
    fee × percent ÷ 100 × share, rounded once. None: of the terms' fee (× 1).

    `objective`, `fee`, `consequences`: canonical JSON of the terms in force for the window.
    `evaluation`: the kit's typed `Evaluation`, or a record of one as the metrics service
    records it (`Evaluation.to_record`) —
      value   — decimal string, "" when undefined;
      status  — "MET" | "BREACHED" | "NO_DATA" | "AT_RISK" ("EVALUATION_STATUS_…" accepted);
      closed  — optional; false raises (absent = closed);
      objective_id — optional; when given it must be the objective's;
      detail  — optional map: eligible_seconds, downtime_seconds (availability, per-unit);
      units   — optional override of the per-unit quantity (see `units_beyond_target`)."""
    if not isinstance(evaluation, Mapping):
        evaluation = evaluation.to_record()
    currency, fee_amount = _fee(fee)
    oid = str(objective.get("objective_id") or "")
    if evaluation.get("objective_id") not in (None, "", oid):
        raise AssessmentError(f"evaluation of {evaluation.get('objective_id')!r} given for objective {oid!r}")
    if evaluation.get("closed") is False:
        raise AssessmentError(f"objective {oid!r}: the window is still open; only a closed window is assessed")
    status = _status(evaluation.get("status"))
    if status == AT_RISK:
        raise AssessmentError(f"objective {oid!r}: AT_RISK is an open window's status; only a closed one is assessed")
    stacking = _stacking(consequences.get("stacking"))
    value = _optional(evaluation.get("value"), "evaluation.value")
    if status == NO_DATA:
        return Assessment(
            oid, status, value, currency, stacking, None, (), ("NO_DATA: the window is not counted; nothing assessed",)
        )
    notes: list[str] = []
    owed: list[Line] = []
    band: dict[str, Any] | None = None
    tiers = objective.get("credit_tiers") or []
    if tiers and value is None:
        notes.append("no measured value: no credit band applies")
    elif tiers and value is not None:
        band = matching_tier(value, tiers)
        if band is None:
            notes.append(f"value {value} is in no credit band")
        else:
            owed.append(_credit_line(value, band, fee_amount, currency, share))
    if status == BREACHED:
        for i, penalty in enumerate(objective.get("penalties") or []):
            kind = penalty.get("kind")
            if kind == "PENALTY_KIND_FIXED":
                owed.append(_fixed_line(penalty, i, currency))
            elif kind == "PENALTY_KIND_PER_UNIT":
                owed.append(_per_unit_line(objective, evaluation, penalty, i, currency))
            else:
                raise AssessmentError(f"penalties[{i}].kind must be PENALTY_KIND_FIXED or PENALTY_KIND_PER_UNIT")
    lines = _stack(owed, stacking, oid)
    reward = _reward_line(objective, status, value, currency, notes)
    if reward is not None:
        lines.append(reward)
    return Assessment(oid, status, value, currency, stacking, band, tuple(lines), tuple(notes))


def _credit_line(
    value: Decimal, band: dict[str, Any], fee_amount: Decimal, currency: str, share: Fraction | None
) -> Line:
    percent = _parse_decimal(band.get("credit_percent") or "0", "credit_tiers.credit_percent")
    if not ZERO <= percent <= HUNDRED:
        raise AssessmentError(f"credit_percent must be 0..100 (got {percent})")
    with localcontext(_EXACT):
        exact = fee_amount * percent / HUNDRED
    exact = _of_share(exact, share)
    money = Money(exact, currency)
    derivation = (
        f"value {value} in band {describe_band(band)}: {percent} % × {fee_amount} {currency}{_share_text(share)}"
        f" = {_rounded_text(exact, money)}"
    )
    return Line(CREDIT, money, derivation, band=band)


def _of_share(exact: Decimal, share: Fraction | None) -> Decimal:
    """`exact` × `share` (of the period charged), to 60 digits — so rounding it once to the
    minor unit gives the exact product's half-even rounding (a tie is a terminating decimal)."""
    if share is None or share == 1:
        return exact
    if not 0 <= share <= 1:
        raise AssessmentError(f"the charged share of a period must be 0..1 (got {share})")
    with localcontext(_SHARE):
        return exact * Decimal(share.numerator) / Decimal(share.denominator)


def _share_text(share: Fraction | None) -> str:
    return "" if share is None or share == 1 else f" × {share} of the period charged"


def _fixed_line(penalty: Mapping[str, Any], i: int, currency: str) -> Line:
    amount = _amount(penalty.get("amount"), f"penalties[{i}].amount")
    money = Money(amount, currency)
    return Line(
        FIXED_PENALTY,
        money,
        f"breached: fixed penalty {amount} {currency} per breach × 1 breach = {_rounded_text(amount, money)}",
    )


def _per_unit_line(
    objective: Mapping[str, Any], evaluation: Mapping[str, Any], penalty: Mapping[str, Any], i: int, currency: str
) -> Line:
    amount = _amount(penalty.get("amount"), f"penalties[{i}].amount")
    grace = _parse_decimal(penalty.get("grace_units") or "0", f"penalties[{i}].grace_units")
    if grace < 0:
        raise AssessmentError(f"penalties[{i}].grace_units must not be negative (got {grace})")
    units = units_beyond_target(objective, evaluation, str(penalty.get("unit") or ""))
    with localcontext(_EXACT):
        chargeable = max(ZERO, units.started - grace)
        exact = amount * chargeable
    money = Money(exact, currency)
    derivation = (
        f"breached: {units.derivation}; {units.started} − {grace} grace = {chargeable} {units.unit}(s)"
        f" × {amount} {currency} = {_rounded_text(exact, money)}"
    )
    return Line(PER_UNIT_PENALTY, money, derivation, units=chargeable)


def _reward_line(
    objective: Mapping[str, Any], status: str, value: Decimal | None, currency: str, notes: list[str]
) -> Line | None:
    reward = objective.get("reward") or {}
    if reward.get("stretch_target") in (None, ""):
        return None
    stretch = _parse_decimal(reward["stretch_target"], "reward.stretch_target")
    amount = _amount(reward.get("amount"), "reward.amount")
    comparator = objective.get("comparator")
    if comparator not in (AT_LEAST, AT_MOST):
        raise AssessmentError(f"objective.comparator must be {AT_LEAST} or {AT_MOST}, not {comparator!r}")
    if status != MET or value is None:
        return None
    beats = value > stretch if comparator == AT_LEAST else value < stretch
    sign = ">" if comparator == AT_LEAST else "<"
    if not beats:
        notes.append(f"value {value} does not beat the stretch target {stretch} ({sign}): no reward")
        return None
    money = -Money(amount, currency)
    return Line(
        REWARD,
        money,
        f"value {value} beats the stretch target {stretch} ({sign}): reward {amount} {currency}"
        f" paid by the customer = {money}",
    )


def _stack(owed: list[Line], stacking: str, oid: str) -> list[Line]:
    if stacking == STACK or len(owed) < 2:
        return list(owed)
    if stacking == "":
        competing = [ln for ln in owed if not ln.amount.is_zero()]
        if len(competing) > 1:
            raise AssessmentError(
                f"objective {oid!r}: {len(competing)} amounts compete ({', '.join(ln.kind for ln in competing)})"
                " but consequences.stacking is unspecified; the agreement must say whether they stack"
            )
        return list(owed)
    best = 0
    for i, ln in enumerate(owed):
        if ln.amount > owed[best].amount:
            best = i
    winner = owed[best]
    return [
        ln
        if i == best
        else replace(
            ln,
            applied=False,
            derivation=f"{ln.derivation}; not applied: highest applies ({winner.kind} {winner.amount})",
        )
        for i, ln in enumerate(owed)
    ]


# -- statement totals -----------------------------------------------------------------------


def statement_totals(
    assessments: Iterable[Assessment],
    consequences: Mapping[str, Any],
    fee: Mapping[str, Any],
    share: Fraction | None = None,
) -> Totals:
    """A period's totals over its assessments (see the module docstring for the order:
    credits → cap → minimum on the period total → rewards netted). Raises
    CurrencyMismatchError when an assessment is not in the fee's currency. `share`: as for
    `assess` — the cap is then cap% of the fee × the charged share of the period."""
    currency, fee_amount = _fee(fee)
    items = list(assessments)
    for a in items:
        if a.currency != currency:
            raise CurrencyMismatchError(
                f"assessment of {a.objective_id!r} is in {a.currency}, the statement in {currency}: never mixed"
            )
    before = Money.total((a.credits for a in items), currency)
    rewards = Money.total((a.rewards for a in items), currency)
    lines: list[Line] = []

    cap: Money | None = None
    after = before
    cap_percent = _optional(consequences.get("cap_percent"), "consequences.cap_percent")
    if cap_percent is not None:
        if cap_percent < 0:
            raise AssessmentError(f"consequences.cap_percent must not be negative (got {cap_percent})")
        with localcontext(_EXACT):
            cap_exact = fee_amount * cap_percent / HUNDRED
        cap_exact = _of_share(cap_exact, share)
        cap = Money(cap_exact, currency)
        after = min(before, cap, key=lambda m: m.amount)
        cut = before - after
        verdict = f"credits {before} exceed it: cut {cut}" if cut.amount > 0 else f"credits {before} within it"
        lines.append(
            Line(
                CAP,
                -cut,
                f"cap {cap_percent} % × {fee_amount} {currency}{_share_text(share)}"
                f" = {_rounded_text(cap_exact, cap)}; {verdict}",
            )
        )
    cap_cut = before - after

    minimum: Money | None = None
    issued = after
    min_exact = _optional(consequences.get("minimum_amount"), "consequences.minimum_amount")
    if min_exact is not None and min_exact != 0:
        minimum = Money(min_exact, currency)
        if after.is_zero():
            derivation = f"no credits (minimum {min_exact} {currency})"
        elif after.amount < min_exact:
            issued = Money.zero(currency)
            derivation = f"credits {after} are under the minimum {min_exact} {currency}: not issued"
        else:
            derivation = f"credits {after} are not under the minimum {min_exact} {currency}: issued"
        lines.append(Line(MINIMUM, -(after - issued), derivation))
    minimum_cut = after - issued

    net = issued + rewards
    return Totals(
        currency=currency,
        credits_before_cap=before,
        cap=cap,
        cap_cut=cap_cut,
        credits_after_cap=after,
        minimum=minimum,
        minimum_cut=minimum_cut,
        credits_issued=issued,
        rewards=rewards,
        net=net,
        lines=tuple(lines),
    )


# -- parsing --------------------------------------------------------------------------------


def _parse(text: str, field: str) -> Decimal:
    try:
        d = Decimal(text.strip())
    except InvalidOperation:
        raise AssessmentError(f"{field} must be a decimal number, not {text!r}") from None
    if not d.is_finite():
        raise AssessmentError(f"{field} must be a finite decimal, not {text!r}")
    return d


def _parse_decimal(raw: Any, field: str) -> Decimal:
    if isinstance(raw, float):
        raise TypeError(f"{field} is a float; decimals are strings or Decimal, never float")
    if isinstance(raw, Decimal):
        if not raw.is_finite():
            raise AssessmentError(f"{field} must be a finite decimal, not {raw}")
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return Decimal(raw)
    if isinstance(raw, str) and raw.strip():
        return _parse(raw, field)
    raise AssessmentError(f"{field} is required (a decimal string), not {raw!r}")


def _optional(raw: Any, field: str) -> Decimal | None:
    """A decimal, or None for an empty string / absent value (an open bound, an undefined value)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _parse_decimal(raw, field)


def _as_value(value: Any, field: str) -> Decimal:
    d = _optional(value, field)
    if d is None:
        raise AssessmentError(f"{field} is required")
    return d


def _amount(raw: Any, field: str) -> Decimal:
    d = _parse_decimal(raw, field)
    if d < 0:
        raise AssessmentError(f"{field} must not be negative (got {d})")
    return d


def _fee(fee: Mapping[str, Any]) -> tuple[str, Decimal]:
    currency = str(fee.get("currency") or "")
    minor_unit(currency)
    return currency, _amount(fee.get("amount"), "fee.amount")


def _status(raw: Any) -> str:
    status = str(raw or "").removeprefix("EVALUATION_STATUS_")
    if status not in STATUSES:
        raise AssessmentError(f"evaluation.status must be one of {', '.join(STATUSES)}, not {raw!r}")
    return status


def _stacking(raw: Any) -> str:
    if raw in (None, "", "STACKING_RULE_UNSPECIFIED"):
        return ""
    if raw not in (STACK, HIGHEST_APPLIES):
        raise AssessmentError(f"consequences.stacking must be {STACK} or {HIGHEST_APPLIES}, not {raw!r}")
    return str(raw)


def _rounded_text(exact: Decimal, money: Money) -> str:
    """ "1200.00 EUR", or "0.125 EUR → 0.12 EUR (half-even)" when rounding changed it."""
    if exact == money.amount:
        return str(money)
    return f"{exact} {money.currency} → {money} (half-even)"
