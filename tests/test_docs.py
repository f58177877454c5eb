"""The README's configuration table names every setting the services read."""

from __future__ import annotations

from pathlib import Path

from accord_kit.settings import GATEWAY_SETTINGS, SERVICE_SETTINGS, SUITE_SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [f"ACCORD_{s.name}" for s in SUITE_SETTINGS if f"`ACCORD_{s.name}`" not in readme]
    missing += [f"<SERVICE>_{s.name}" for s in SERVICE_SETTINGS if f"`<SERVICE>_{s.name}`" not in readme]
    missing += [f"GATEWAY_{s.name}" for s in GATEWAY_SETTINGS if f"`GATEWAY_{s.name}`" not in readme]
    assert not missing, f"README.md's configuration table lacks {missing}"


def test_every_service_has_a_readme_naming_its_settings() -> None:
    for svc in ("agreements", "metrics", "billing", "gateway"):
        text = (ROOT / "services" / svc / "README.md").read_text()
        assert f"{svc.upper()}_GRPC_PORT" in text
        assert f"python -m accord_{svc}" in text
