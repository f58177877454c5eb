"""The notifier's settings: the only place it reads the environment. Besides the common
service settings, the `NOTIFIER_*` delivery settings (`accord_kit.settings.NOTIFIER_SETTINGS`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from accord_kit.settings import NOTIFIER_SETTINGS, ServiceSettings, SettingsError

SERVICE = "notifier"
BOUNDS: dict[str, tuple[float, float]] = {
    "DELIVERY_TIMEOUT_SECONDS": (0.1, 300),
    "MAX_ATTEMPTS": (1, 100),
    "RETRY_BASE_SECONDS": (0.01, 3600),
    "RETRY_MAX_SECONDS": (0.01, 86400),
    "DISPUTE_NOTICE_DAYS": (0, 365),
    "ALERT_HOLD_HOURS": (1, 24 * 400),
}


def load(environ: Mapping[str, str] | None = None) -> ServiceSettings:
    env = dict(os.environ if environ is None else environ)
    settings = ServiceSettings.from_env(SERVICE, env)
    extra: dict[str, str] = {}
    for s in NOTIFIER_SETTINGS:
        name = f"NOTIFIER_{s.name}"
        raw = env.get(name, s.default).strip()
        if s.name in BOUNDS:
            lo, hi = BOUNDS[s.name]
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number, not {raw!r}") from None
            if not lo <= value <= hi or (s.name == "MAX_ATTEMPTS" and value != int(value)):
                raise SettingsError(f"{name} must be {'a whole number ' if s.name == 'MAX_ATTEMPTS' else ''}"
                                    f"between {lo:g} and {hi:g}, not {raw}")  # fmt: skip
        elif s.name == "ALERTMANAGER_URL" and raw:
            parts = urlsplit(raw)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SettingsError(f"{name} must be an http or https URL, not {raw!r}")
        extra[s.name] = raw
    return dataclasses.replace(settings, extra=extra)
