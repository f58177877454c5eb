"""A department's whole story, as a user lives it: the suite as `make run` starts it (real
processes, NATS, SQLite), driven only through the real `accord` command and HTTP — no gRPC
in this file. One fake clock is shared by every process (ACCORD_CLOCK_FILE), so a month
passes in seconds.

IT operations (provider) and finance (customer) agree on e-mail from the corporate example
terms; finance subscribes a webhook; an outage is typed with `accord signal outage`, another
arrives as an Alertmanager notification; February is breached and credited on its statement;
finance disputes the month by its local date and IT operations accepts with an amount; the
webhook received the breach, signed; an auditor replays, verifies and exports the history
and verifies the export offline."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from accord_kit.clock import FileClock
from accord_kit.testing.devrun import clean_environment, start_devrun, stop_devrun
from accord_kit.testing.nats import free_port
from accord_kit.testing.webhook import Receiver

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
AMS = ZoneInfo("Europe/Amsterdam")
SERVICES = ["agreements", "metrics", "billing", "gateway", "notifier"]
ACCORD = str(Path(sys.executable).parent / "accord")
SECRET = "finance-webhook-secret-0001"


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=AMS)


@dataclass
class Suite:
    var: Path
    clock_file: Path
    ports: dict[str, int]
    http_port: int
    proc: subprocess.Popen[str]

    def env(self, token: str = "") -> dict[str, str]:
        env = clean_environment()
        env.update({f"ACCORD_{s.upper()}_ADDR": f"127.0.0.1:{p}" for s, p in self.ports.items()})
        env["ACCORD_VAR_DIR"] = str(self.var)
        env["ACCORD_CONFIG"] = str(self.var / "no-config.toml")
        if token:
            env["ACCORD_TOKEN"] = token
        return env

    def accord(self, *args: str, token: str = "", ok: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([ACCORD, *args], env=self.env(token), capture_output=True, text=True, timeout=120)
        if ok:
            assert r.returncode == 0, f"accord {' '.join(args)} → {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def accord_json(self, *args: str, token: str) -> Any:
        return json.loads(self.accord("--json", *args, token=token).stdout)

    def http(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def set_clock(self, when: datetime) -> None:
        FileClock.write(self.clock_file, when)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, KeyError, IndexError, StopIteration) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[Suite]:
    var = tmp_path / "var"
    clock_file = tmp_path / "clock"
    FileClock.write(clock_file, local("2026-01-20T09:00"))
    ports = {s: free_port() for s in SERVICES}
    http_port = free_port()
    extra = {
        "ACCORD_CLOCK_FILE": str(clock_file),
        **{f"{s.upper()}_METRICS_PORT": "" for s in SERVICES},
        **{f"{s.upper()}_TICK_SECONDS": "0.5" for s in ("agreements", "metrics", "billing")},
    }
    proc, _ = start_devrun(var, ports, free_port(), http_port, extra=extra)
    s = Suite(var, clock_file, ports, http_port, proc)
    try:
        yield s
    finally:
        stop_devrun(proc)


def story_terms(path: Path) -> Path:
    """The corporate example terms, as IT operations adapts them for finance's e-mail (edited as
    text, so the file keeps its comments, plain numbers and instants as written)."""
    text = (ROOT / "examples" / "terms" / "sla-corporate.yaml").read_text()
    for old, new in (
        ("title: IT services for every department", "title: E-mail for Finance"),
        ("customer_department_id: corporate ", "customer_department_id: finance   "),
        ("service:\n", "service:\n  service_ids: [email]\n"),
        ("audience: [it-operations, corporate]", "audience: [it-operations, finance]"),
    ):
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text)
    return path


def test_a_department_story_with_the_accord_command_and_http_only(suite: Suite, tmp_path: Path) -> None:
    s = suite

    def mint(role: str, subject: str, department: str = "") -> str:
        args = ["token", "mint", "--role", role, "--subject", subject]
        args += ["--department", department] if department else []
        return s.accord(*args).stdout.strip()

    admin, auditor = mint("admin", "root"), mint("auditor", "audrey")
    it, finance = mint("department", "ann", "it-operations"), mint("department", "bob", "finance")

    # Reference data, then the provider drafts from the example file and proposes.
    s.accord("register", "department", "it-operations", "IT operations", token=admin)
    s.accord("register", "department", "finance", "Finance", token=admin)
    s.accord("register", "department", "corporate", "The organisation", token=admin)
    s.accord("register", "service", "email", "E-mail", "it-operations", token=admin)
    terms_file = story_terms(tmp_path / "email-sla.yaml")
    s.accord("validate", str(terms_file))
    drafted = s.accord_json("draft", str(terms_file), token=it)
    aid = drafted["agreement"]["agreement_id"] if "agreement" in drafted else drafted["agreement_id"]
    s.accord("propose", aid, token=it)

    # The customer reads the terms before accepting, then accepts.
    shown = s.accord("show", aid, token=finance).stdout
    assert "E-mail for Finance" in shown and "availability" in shown and "99.5" in shown
    s.accord("accept", aid, token=finance)
    listed = s.accord_json("list", token=finance)
    assert aid in json.dumps(listed)

    # Finance subscribes a webhook for breaches and statements.
    receiver = Receiver().start()
    try:
        s.accord("webhook", "subscribe", f"http://127.0.0.1:{receiver.port}/accord", "--secret", SECRET, token=finance)

        # February: a 3-hour outage typed by IT operations, a 2-hour one from Alertmanager.
        s.set_clock(local("2026-02-12T13:00"))
        s.accord(
            "signal", "outage", "email", "--start", "2026-02-10T09:00", "--end", "2026-02-10T12:00",
            "--tz", "Europe/Amsterdam", "--cause", "mail store full", token=it,
        )  # fmt: skip
        # The notification the README posts (examples/signals/), and the firing one before it.
        resolved = json.loads((ROOT / "examples" / "signals" / "alertmanager-notification.json").read_text())
        firing = {
            **resolved,
            "status": "firing",
            "alerts": [{**a, "status": "firing", "endsAt": "0001-01-01T00:00:00Z"} for a in resolved["alerts"]],
        }
        assert s.http("POST", "/v1/intake/alertmanager", it, firing) == (
            200,
            {"accepted": 1, "duplicates": 0, "corrections": 0},
        )
        assert s.http("POST", "/v1/intake/alertmanager", it, resolved)[0] == 200
        assert s.http("POST", "/v1/intake/alertmanager", it, resolved)[1]["duplicates"] == 1

        # March begins: February's window closes BREACHED (300 of 40,320 minutes down: 99.256 %).
        s.set_clock(local("2026-03-01T01:00"))

        def february() -> dict[str, Any]:
            code, status = s.http("GET", f"/v1/agreements/{aid}", finance)
            assert code == 200
            obj = next(o for o in status["status"]["objectives"] if o["objective_id"] == "availability")
            closed = [w for w in obj["closed"] if w["window_start"].startswith("2026-01-31T23:00")]
            return closed[0] if closed and closed[0]["status"] == "BREACHED" else {}

        window = wait_for("February's window to close breached", february)
        assert Decimal(window["value"]).quantize(Decimal("0.001")) == Decimal("99.256")

        # February's statement: 5 % of the 50,000.00 EUR fee credited.
        def february_statement() -> dict[str, Any]:
            for st in s.accord_json("statements", aid, token=finance)["statements"]:
                if st["period_start"].startswith("2026-01-31T23:00") and st.get("state") in (
                    "ISSUED",
                    "STATEMENT_STATE_ISSUED",
                ):
                    return dict(st)
            return {}

        statement = wait_for("February's statement", february_statement)
        sid = statement["statement_id"]
        shown_statement = s.accord("statement", sid, token=finance).stdout
        assert "2,500.00" in shown_statement or "2500.00" in shown_statement

        # Finance disputes February by its local date; IT operations accepts at 15 %.
        s.accord("dispute", sid, "availability", "2026-02", "--reason", "we measured more downtime", token=finance)
        s.accord("resolve-dispute", sid, "availability", "2026-02", "--accept", "--amount", "7500.00", token=it)
        disputed = s.accord_json("statement", sid, token=finance)
        assert "7500.00" in json.dumps(disputed)

        # The webhook received the breach, signed with the subscription's secret.
        def breach_delivered() -> list[Any]:
            return [r for r in receiver.received if b"BREACH" in r.body.upper() and aid.encode() in r.body]

        deliveries = wait_for("the breach webhook", breach_delivered)
        first = deliveries[0]
        stamp = first.headers["accord-timestamp"]
        expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + first.body, hashlib.sha256).hexdigest()
        assert first.headers["accord-signature"] == f"sha256={expected}"
        assert first.headers["idempotency-key"]
    finally:
        receiver.stop()

    # The auditor: the whole history in causal order, every log verified, an export verified offline.
    replay = s.accord("audit", "replay", aid, token=auditor).stdout
    assert ("BreachDetected" in replay and "DisputeResolved" in replay) or "Dispute" in replay
    s.accord("audit", "verify", token=auditor)
    export = tmp_path / "export"
    s.accord("audit", "export", aid, "--out", str(export), token=auditor)
    s.accord("audit", "verify", "--offline", str(export))
