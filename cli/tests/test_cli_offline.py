"""The real `accord` process where no service needs to answer: the version, errors as one
line with the documented exit codes (an unreachable service, unreadable, empty and
malformed YAML files, bad options), global options anywhere on the line, profiles from the
config file, development tokens from the signing key; and terms files whose decimal fields
are written as plain YAML numbers."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format

from accord.agreements.v1 import terms_pb2
from accord_agreements.samples import sla_terms
from accord_cli import __version__
from accord_cli.yamlio import for_message, load_yaml
from accord_kit.auth import TokenVerifier
from accord_kit.testing.nats import free_port
from accord_kit.testing.service import make_keys
from cli.tests.cliproc import clean_env, one_line_error, run

ROOT = Path(__file__).resolve().parents[2]


def test_version_matches_the_project() -> None:
    r = run(clean_env(Path("/nonexistent")), "--version")
    assert r.code == 0 and r.out.strip() == f"accord {__version__}"
    assert __version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_an_unreachable_service_is_one_line_exit_1_and_json_anywhere(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path, ACCORD_TOKEN="not-checked-before-connecting")
    r = run(env, "--addr", f"agreements=127.0.0.1:{port}", "list")
    assert r.code == 1
    assert f"agreements at 127.0.0.1:{port} is not reachable" in one_line_error(r)
    # --json after the subcommand (and --addr too): the error as JSON on stdout as well.
    r = run(env, "list", "--json", f"--addr=agreements=127.0.0.1:{port}")
    assert r.code == 1 and json.loads(r.out)["code"] == "UNAVAILABLE"
    one_line_error(r)
    r = run(env, "--addr", "nowhere", "list")
    assert r.code == 2 and "SERVICE=HOST:PORT" in one_line_error(r)


def test_files_that_cannot_be_terms(tmp_path: Path) -> None:
    # The file is read before any service is called: no service runs here.
    env = clean_env(tmp_path, ACCORD_TOKEN="x", ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{free_port()}")
    missing = tmp_path / "missing.yaml"
    r = run(env, "draft", str(missing))
    assert r.code == 2 and "cannot read agreement terms" in one_line_error(r)
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n# nothing\n")
    r = run(env, "draft", str(empty))
    assert r.code == 2 and "is empty" in one_line_error(r)
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("title: [unclosed\nobjectives: {\n")
    r = run(env, "draft", str(malformed))
    assert r.code == 2 and str(malformed) in one_line_error(r)
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- one\n- two\n")
    r = run(env, "draft", str(a_list))
    assert r.code == 2 and "mapping" in one_line_error(r)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("title: x\nno_such_field: 1\n")
    r = run(env, "draft", str(unknown))
    assert r.code == 5 and "no_such_field" in one_line_error(r)
    r = run(env, "define", "calendar", str(empty))
    assert r.code == 2 and "is empty" in one_line_error(r)
    # A usage error is one line too, naming the command.
    r = run(env, "draft")
    assert r.code == 2 and "accord draft" in one_line_error(r)
    r = run(env, "signal", "import", str(tmp_path / "signals.txt"))
    assert r.code == 2 and "cannot read" in one_line_error(r)


def test_plain_yaml_numbers_are_decimal_text_as_written() -> None:
    terms = sla_terms()
    text = yaml.safe_dump(terms).replace("target: '99.9'", "target: 99.9")
    text = text.replace("credit_percent: '10'", "credit_percent: 10")
    assert "target: 99.9\n" in text and "credit_percent: 10\n" in text
    parsed = json_format.ParseDict(for_message(load_yaml(text), terms_pb2.AgreementTerms.DESCRIPTOR),
                                   terms_pb2.AgreementTerms())  # fmt: skip
    assert parsed == json_format.ParseDict(terms, terms_pb2.AgreementTerms())
    doc = load_yaml(
        "objectives:\n- objective_id: a\n  target: 99.90\n  window: {kind: 3, rolling_days: 30}\n"
        "  credit_tiers: [{lower: 0.1, upper: 1_000.50, credit_percent: 12.5e+1}]\n"
        "  parameters: {min_outage_seconds: 60}\n"
        "fee: {amount: 99999999999999999.99, currency: EUR}\n"
        "term: {effective_from: 2026-01-01T00:00:00+01:00}\n"
    )
    m = json_format.ParseDict(for_message(doc, terms_pb2.AgreementTerms.DESCRIPTOR), terms_pb2.AgreementTerms())
    o = m.objectives[0]
    assert (o.target, o.credit_tiers[0].lower, o.credit_tiers[0].upper) == ("99.90", "0.1", "1000.50")
    assert o.credit_tiers[0].credit_percent == "125"
    assert o.window.kind == terms_pb2.WINDOW_KIND_MONTH and o.window.rolling_days == 30
    assert o.parameters["min_outage_seconds"] == "60"
    assert m.fee.amount == "99999999999999999.99"  # no float rounding
    assert m.term.effective_from.ToJsonString() == "2025-12-31T23:00:00Z"


def test_profiles_choose_addresses_and_tokens(tmp_path: Path) -> None:
    port, other = free_port(), free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'token = "top"\nagreements = "127.0.0.1:{other}"\n'
        f'[profiles.staging]\nagreements = "127.0.0.1:{port}"\ntoken = "staging-token"\n'
    )
    env = clean_env(tmp_path, ACCORD_CONFIG=str(config))
    r = run(env, "list", "--profile", "staging")
    assert r.code == 1 and f"127.0.0.1:{port} is not reachable" in one_line_error(r)
    r = run({**env, "ACCORD_PROFILE": "staging"}, "list")
    assert r.code == 1 and f"127.0.0.1:{port}" in one_line_error(r)
    r = run(env, "list")  # no profile: the config file's top level
    assert r.code == 1 and f"127.0.0.1:{other}" in one_line_error(r)
    r = run(env, "--addr", f"agreements=127.0.0.1:{other}", "--profile", "staging", "list")
    assert r.code == 1 and f"127.0.0.1:{other}" in one_line_error(r)  # --addr wins
    r = run(env, "--profile", "production", "list")
    assert r.code == 2 and "staging" in one_line_error(r)
    config.write_text("token = [unclosed\n")
    r = run(env, "list")
    assert r.code == 2 and "not valid TOML" in one_line_error(r)


def test_a_development_token_from_the_signing_key(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "var" / "keys")
    env = clean_env(tmp_path)
    r = run(env, "--json", "token", "mint", "--role", "department", "--subject", "ann", "--department", "finance",
            "--ttl", "1h30m", "--key", str(tmp_path / "var" / "keys" / "auth_private.pem"))  # fmt: skip
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    principal = TokenVerifier(keys.public_file.read_bytes()).verify(f"Bearer {doc['token']}")
    assert (principal.subject, principal.role, principal.department) == ("ann", "department", "finance")
    assert doc["claims"]["exp"] - doc["claims"]["iat"] == 5400
    # Without --key: the key under ACCORD_VAR_DIR (as `make run` writes it); the token alone on stdout.
    r = run({**env, "ACCORD_VAR_DIR": str(tmp_path / "var")}, "token", "mint", "--role", "auditor", "--subject", "al")
    assert r.code == 0, r.err
    assert TokenVerifier(keys.public_file.read_bytes()).verify(f"Bearer {r.out.strip()}").role == "auditor"
    for args, words in (
        (("--role", "king", "--subject", "x"), "--role"),
        (("--role", "department", "--subject", "x"), "--department"),
        (("--role", "admin", "--subject", "x", "--ttl", "soon"), "--ttl"),
        (("--role", "admin", "--subject", "x", "--key", str(tmp_path / "none.pem")), "no signing key"),
    ):
        r = run(env, "token", "mint", *args, cwd=tmp_path)
        assert r.code == 2 and words in one_line_error(r), (args, r.err)


@pytest.mark.parametrize("args", [("no-such-command",), ("list", "--no-such-option"), ("signal", "outage")])
def test_usage_errors(tmp_path: Path, args: tuple[str, ...]) -> None:
    r = run(clean_env(tmp_path), *args)
    assert r.code == 2
    one_line_error(r)


def test_the_token_roles_are_the_kits() -> None:
    from accord_cli import tokens
    from accord_kit import auth, keys

    assert set(tokens.ROLES) == auth.ROLES and tokens.PRIVATE == keys.PRIVATE
