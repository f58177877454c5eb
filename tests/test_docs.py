"""The docs: the README's configuration table names every setting the services read, and
the repository's documents refer only to documents in the repository (docs/)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from accord_kit.settings import GATEWAY_SETTINGS, METRICS_SETTINGS, NOTIFIER_SETTINGS, SERVICE_SETTINGS, SUITE_SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [f"ACCORD_{s.name}" for s in SUITE_SETTINGS if f"`ACCORD_{s.name}`" not in readme]
    missing += [f"<SERVICE>_{s.name}" for s in SERVICE_SETTINGS if f"`<SERVICE>_{s.name}`" not in readme]
    missing += [f"GATEWAY_{s.name}" for s in GATEWAY_SETTINGS if f"`GATEWAY_{s.name}`" not in readme]
    missing += [f"METRICS_{s.name}" for s in METRICS_SETTINGS if f"`METRICS_{s.name}`" not in readme]
    missing += [f"NOTIFIER_{s.name}" for s in NOTIFIER_SETTINGS if f"`NOTIFIER_{s.name}`" not in readme]
    assert not missing, f"README.md's configuration table lacks {missing}"


def test_every_service_has_a_readme_naming_its_settings() -> None:
    for svc in ("agreements", "metrics", "billing", "gateway", "notifier"):
        text = (ROOT / "services" / svc / "README.md").read_text()
        assert f"{svc.upper()}_GRPC_PORT" in text
        assert f"python -m accord_{svc}" in text


# The docs the repository relies on are its own (docs/); nothing may point outside it.
OUTSIDE_DOCS = re.compile(r"\.\./shared|(?<![\w/])(?:DESIGN|DOMAIN|STYLE)\.md")
DOC_REF = re.compile(r"docs/([a-z_]+\.md)")
SECTION_REF = re.compile(r'docs/domain\.md,? §(\d)(?:–\d)?,? "([^"]+)"')


def _tracked_text_files() -> list[Path]:
    """Every tracked file (or, outside a git checkout, every file but the ignored trees)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        paths = [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "gen", "var", "__pycache__", "bench-results", "test-artifacts"}
        paths = [p for p in ROOT.rglob("*") if not skip.intersection(p.relative_to(ROOT).parts)]
    return [p for p in paths if p.is_file() and p != Path(__file__).resolve()]


def _domain_parts() -> dict[str, set[str]]:
    """docs/domain.md's headings by section: {"4": {"Contact centre", …}, …}."""
    parts: dict[str, set[str]] = {}
    section = ""
    for line in (ROOT / "docs" / "domain.md").read_text().splitlines():
        if line.startswith("## §"):
            section = line[4]
        elif line.startswith("### ") and section:
            parts.setdefault(section, set()).add(line[4:].strip())
    return parts


def test_docs_refer_only_to_the_repository() -> None:
    outside: list[str] = []
    missing: set[str] = set()
    cited: set[tuple[str, str]] = set()
    for path in _tracked_text_files():
        text = path.read_bytes().decode("utf-8", errors="ignore")
        rel = path.relative_to(ROOT)
        outside += [f"{rel}: {m.group(0)}" for m in OUTSIDE_DOCS.finditer(text)]
        missing |= {f"{rel}: docs/{name}" for name in DOC_REF.findall(text) if not (ROOT / "docs" / name).is_file()}
        cited |= {(number, " ".join(name.split())) for number, name in SECTION_REF.findall(text)}
    assert not outside, f"references to documents outside the repository: {outside}"
    assert not missing, f"references to docs that do not exist: {sorted(missing)}"
    # A part cited by name, as in `docs/domain.md §4 "Contact centre"`, is a heading of that section.
    parts = _domain_parts()
    unknown = sorted(f'§{n} "{name}"' for n, name in cited if name not in parts.get(n, set()))
    assert not unknown, f"docs/domain.md has no such part: {unknown}"
