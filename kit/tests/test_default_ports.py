"""Every port the suite listens on unless told otherwise lies below Linux's ephemeral range. The
kernel gives each outgoing connection (any program's, or a service's own to NATS or to another
service while the rest are still starting) a local port from that range; a default port inside
it could be held by such a connection, and its service could not listen there."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from accord_kit import clusterrun, devrun
from accord_kit.settings import SERVICES, SUITE_SETTINGS, ServiceSettings

# Linux's default net.ipv4.ip_local_port_range: fixed here, so that the test means the same on
# every machine whatever its own range.
EPHEMERAL = range(32768, 60999 + 1)


def _port(address: str) -> int:
    port = urlsplit(address if "//" in address else f"//{address}").port
    assert port is not None, address
    return port


def _service_defaults() -> dict[str, int]:
    """What each service listens on, and the addresses it is given of the others, with no
    setting given (the settings' own defaults)."""
    ports: dict[str, int] = {}
    for service in SERVICES:
        settings = ServiceSettings.from_env(service, {})
        ports[f"{service} gRPC"] = settings.grpc_port
        if settings.metrics_port is not None:
            ports[f"{service} metrics"] = settings.metrics_port
        if service == "gateway":
            ports["gateway HTTP"] = settings.http_port
        ports |= {f"{service}: ACCORD_{other.upper()}_ADDR": _port(a) for other, a in settings.addresses.items()}
        ports[f"{service}: ACCORD_NATS_URL"] = _port(settings.nats_url)
    return ports


def _make_run_defaults() -> dict[str, int]:
    """What `make run` (accord_kit.devrun) listens on with nothing set."""
    ports = {f"{service} gRPC": port for service, port in devrun.grpc_ports({}).items()}
    ports |= {f"{service} metrics": port for service, port in devrun.DEV_METRICS_PORTS.items()}
    ports["nats"] = devrun.DEFAULT_NATS_PORT
    ports["gateway HTTP"] = ServiceSettings.from_env("gateway", {}).http_port
    return ports


def _suite_setting_defaults() -> dict[str, int]:
    """The suite-wide settings' defaults that name where something listens."""
    ports = {}
    for setting in SUITE_SETTINGS:
        if setting.name.endswith("_ADDR") or setting.name == "NATS_URL":
            ports |= {f"ACCORD_{setting.name}": _port(url) for url in setting.default.split(",")}
    return ports


@pytest.mark.parametrize(
    "defaults",
    [_service_defaults, _make_run_defaults, _suite_setting_defaults, clusterrun.default_ports],
    ids=["services", "make-run", "suite-settings", "make-run-cluster"],
)
def test_no_default_port_lies_in_the_ephemeral_range(defaults: Callable[[], dict[str, int]]) -> None:
    ports = defaults()
    assert ports
    inside = {what: port for what, port in ports.items() if port in EPHEMERAL}
    assert not inside, f"default ports inside Linux's ephemeral range 32768–60999: {inside}"


def test_make_run_listens_where_the_services_look_for_each_other_by_default() -> None:
    assert devrun.grpc_ports({}) == SERVICES
    addresses = ServiceSettings.from_env("gateway", {}).addresses
    assert {service: _port(address) for service, address in addresses.items()} == {s: SERVICES[s] for s in addresses}
