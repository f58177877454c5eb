"""The gateway's settings: the only place it reads the environment."""

from __future__ import annotations

from collections.abc import Mapping

from accord_kit.settings import ServiceSettings

SERVICE = "gateway"


def load(environ: Mapping[str, str] | None = None) -> ServiceSettings:
    return ServiceSettings.from_env(SERVICE, environ)
