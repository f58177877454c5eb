"""An agreement's whole life through the real `accord` process against the real agreements
service: reference data and a business calendar, a draft from YAML with plain numbers, its
revision, the proposal the customer reads before accepting, amendments rejected, withdrawn
and accepted (with their diffs), the history, suspension, resumption and termination — and
the errors a department meets on the way (a bad token, an unknown agreement, the wrong party)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from accord_agreements.bootstrap import build as build_agreements
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_agreements.settings import load as load_agreements
from accord_kit.auth import mint_token
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ
from cli.tests.cliproc import arun, clean_env, one_line_error

pytestmark = pytest.mark.slow


def terms_file(path: Path, title: str, target: str) -> Path:
    """The sample terms as a person writes them: the availability target a plain YAML number."""
    terms = sla_terms(title=title)
    text = yaml.safe_dump(terms, sort_keys=False).replace("target: '99.9'", f"target: {target}")
    assert f"target: {target}\n" in text
    path.write_text(text)
    return path


async def test_an_agreements_life_from_the_terminal(own_nats_server: NatsServer, tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    tokens = {
        who: mint_token(keys.private, subject=who, role=role, department=dept)
        for who, role, dept in (("admin", "admin", ""), ("it", "department", IT), ("fin", "department", FINANCE))
    }
    service_token = tmp_path / "keys" / "service.token"
    service_token.write_text(mint_token(keys.private, subject="svc", role="service"))
    env_a = service_environ("agreements", tmp_path / "agreements", own_nats_server.url, "sqlite",
                            ACCORD_SERVICE_TOKEN_FILE=str(service_token))  # fmt: skip
    async with running_service(build_agreements, load_agreements(env_a), keys) as agreements:
        env = clean_env(tmp_path, ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{agreements.port}")
        admin, it, fin = ({**env, "ACCORD_TOKEN": tokens[w]} for w in ("admin", "it", "fin"))

        for dept in (IT, FINANCE):
            assert (await arun(admin, "register", "department", dept, dept)).code == 0
        assert (await arun(admin, "register", "service", EMAIL, "E-mail", IT)).code == 0
        # A business calendar from YAML: dates and times unquoted, as people write them.
        calendar = tmp_path / "office.yaml"
        calendar.write_text(
            "calendar_id: office\ntime_zone: Europe/Amsterdam\n"
            "hours:\n" + "".join(f"  - {{weekday: {d}, opens: '08:00', closes: '18:00'}}\n" for d in range(1, 6))
            + "holidays: [2026-12-25, 2026-12-26]\n"
        )  # fmt: skip
        r = await arun(admin, "--json", "define", "calendar", str(calendar))
        assert r.code == 0, r.err
        defined = json.loads(r.out)["calendar"]
        assert defined["version"] == 1 and defined["holidays"] == ["2026-12-25", "2026-12-26"]
        assert len(defined["hours"]) == 5

        # The provider drafts from YAML with `target: 99.9` as a plain number, then revises.
        r = await arun(it, "--json", "draft", str(terms_file(tmp_path / "v0.yaml", "E-mail draft", "99.9")))
        assert r.code == 0, r.err
        aid = json.loads(r.out)["agreement"]["agreement_id"]
        r = await arun(
            it, "revise", aid, str(terms_file(tmp_path / "v0b.yaml", "E-mail for Finance", "99.9")), "--json"
        )
        assert r.code == 0, r.err
        assert json.loads(r.out)["agreement"]["terms"]["title"] == "E-mail for Finance"
        assert (await arun(it, "propose", aid)).code == 0

        # The customer lists what it sees and reads the full terms before accepting.
        r = await arun(fin, "list", "--json")
        assert r.code == 0, r.err
        (row,) = json.loads(r.out)["agreements"]
        assert (row["agreement_id"], row["title"], row["state"]) == (
            aid,
            "E-mail for Finance",
            "AGREEMENT_STATE_PROPOSED",
        )
        assert (row["provider_department_id"], row["customer_department_id"]) == (IT, FINANCE)
        r = await arun(fin, "show", aid)
        assert r.code == 0, r.err
        assert "E-mail for Finance" in r.out and "target: '99.9'" in r.out and "PROPOSED" in r.out
        r = await arun(fin, "list")
        assert r.code == 0 and aid in r.out and f"{IT} → {FINANCE}" in r.out
        assert (await arun(fin, "accept", aid)).code == 0

        # An amendment the customer rejects (the pending one, without naming it) …
        effective = (datetime.now(UTC) + timedelta(days=14)).replace(microsecond=0).isoformat()
        tighter = terms_file(tmp_path / "v2.yaml", "E-mail for Finance", "99.95")
        r = await arun(it, "--json", "amend", aid, str(tighter), "--effective-from", effective, "--reason", "tighter")
        assert r.code == 0, r.err
        first = json.loads(r.out)["amendment_id"]
        r = await arun(fin, "show", aid)
        assert f"pending amendment {first}" in r.out and "objectives[availability].target" in r.out
        r = await arun(fin, "--json", "diff", aid)
        assert r.code == 0, r.err
        (change,) = json.loads(r.out)["changes"]
        assert (change["path"], change["old_json"], change["new_json"]) == (
            "objectives[availability].target", '"99.9"', '"99.95"',
        )  # fmt: skip
        r = await arun(fin, "--json", "diff", aid, "--amendment", "no-such-amendment")
        assert r.code == 3
        r = await arun(fin, "reject-amendment", aid, "--reason", "too tight for us")
        assert r.code == 0, r.err
        # … one the provider withdraws …
        r = await arun(it, "amend", aid, str(tighter), "--effective-from", effective, "--reason", "again")
        assert r.code == 0, r.err
        assert (await arun(it, "withdraw-amendment", aid, "--reason", "talked it over")).code == 0
        r = await arun(it, "withdraw-amendment", aid)
        assert r.code == 3 and "no pending amendment" in one_line_error(r)
        # … and one the customer accepts: version 2, and the diff between the versions.
        r = await arun(it, "--json", "amend", aid, str(tighter), "--effective-from", effective, "--reason", "agreed")
        third = json.loads(r.out)["amendment_id"]
        assert (await arun(fin, "accept-amendment", aid, third)).code == 0
        r = await arun(fin, "diff", aid, "--from", "1", "--to", "2", "--json")
        assert r.code == 0, r.err
        assert [c["path"] for c in json.loads(r.out)["changes"]] == ["objectives[availability].target"]

        # Suspension is the provider's (with a reason); the customer alone may not.
        r = await arun(fin, "suspend", aid, "--reason", "we want a pause")
        assert r.code == 4 and "PERMISSION_DENIED" in one_line_error(r)
        r = await arun(it, "--json", "suspend", aid, "--reason", "asked by finance: office move")
        assert r.code == 0 and json.loads(r.out)["agreement"]["state"] == "AGREEMENT_STATE_SUSPENDED"
        r = await arun(it, "--json", "resume", aid)
        assert r.code == 0 and json.loads(r.out)["agreement"]["state"] == "AGREEMENT_STATE_ACTIVE"
        r = await arun(fin, "--json", "terminate", aid, "--reason", "moving to another provider",
                       "--at", "2027-06-01T00:00", "--tz", "Europe/Amsterdam")  # fmt: skip
        assert r.code == 0, r.err
        termination = json.loads(r.out)["agreement"]["termination"]
        assert termination["scheduled"] is True and termination["effective_at"] == "2027-05-31T22:00:00Z"
        r = await arun(fin, "show", aid)
        assert "termination scheduled for 2027-05-31T22:00:00Z by finance" in r.out

        # The history: both versions and every lifecycle event in order.
        r = await arun(fin, "--json", "history", aid)
        assert r.code == 0, r.err
        doc = json.loads(r.out)
        assert [v["version"] for v in doc["versions"]] == [1, 2]
        kinds = [e["type"].rsplit(".", 1)[1] for e in doc["events"]]
        assert kinds == [
            "AgreementDrafted", "DraftRevised", "AgreementProposed", "AgreementAccepted", "AmendmentProposed",
            "AmendmentRejected", "AmendmentProposed", "AmendmentWithdrawn", "AmendmentProposed", "AmendmentAccepted",
            "AgreementSuspended", "AgreementResumed", "TerminationScheduled",
        ]  # fmt: skip
        r = await arun(fin, "history", aid)
        assert r.code == 0 and "AmendmentWithdrawn" in r.out and "too tight for us" in r.out

        # Errors: an unknown agreement (3), a bad token (4), each one line.
        r = await arun(fin, "show", "00000000-0000-0000-0000-000000000000")
        assert r.code == 3 and "NOT_FOUND" in one_line_error(r)
        r = await arun({**env, "ACCORD_TOKEN": "not.a.token"}, "list")
        assert r.code == 4 and "UNAUTHENTICATED" in one_line_error(r)
        forged = mint_token(make_keys(tmp_path / "other").private, subject="eve", role="admin")
        r = await arun(env, "list", "--token", forged)
        assert r.code == 4 and "UNAUTHENTICATED" in one_line_error(r)

        # A profile of the config file carries the address and the token.
        config = tmp_path / "config.toml"
        config.write_text(f'[profiles.work]\nagreements = "127.0.0.1:{agreements.port}"\ntoken = "{tokens["fin"]}"\n')
        r = await arun(clean_env(tmp_path, ACCORD_CONFIG=str(config)), "list", "--json", "--profile", "work")
        assert r.code == 0, r.err
        assert [a["agreement_id"] for a in json.loads(r.out)["agreements"]] == [aid]
