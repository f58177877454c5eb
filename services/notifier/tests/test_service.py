"""The notifier as it runs: its real bootstrap on both stores, gRPC over a real channel, its
stream created on NATS, its log served, its durability checks; the subscription API's
policy (a department for itself, an admin for any) and its refusals, which store nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from accord.notifier.v1 import notifier_pb2 as pb
from accord.notifier.v1 import notifier_pb2_grpc as pb_grpc
from accord_kit.settings import SettingsError
from accord_kit.testing import service_checks
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_notifier.bootstrap import build
from accord_notifier.settings import load

SECRET = "sixteen-chars-or-more"


async def test_notifier_starts_serves_its_log_and_creates_its_stream(
    own_nats_server: NatsServer, tmp_path: Path, store_kind: str, postgres_db: Callable[[], str]
) -> None:
    db = postgres_db() if store_kind == "postgres" else ""
    await service_checks.check_starts_and_serves_its_log(
        "notifier", build, load, ["agreements", "metrics", "billing"], own_nats_server.url, tmp_path, store_kind, db
    )


def test_notifier_refuses_an_in_memory_sqlite_store() -> None:
    service_checks.check_refuses_in_memory_sqlite("notifier", load)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("NOTIFIER_MAX_ATTEMPTS", "0", "NOTIFIER_MAX_ATTEMPTS must be a whole number between 1 and 100"),
        ("NOTIFIER_MAX_ATTEMPTS", "2.5", "NOTIFIER_MAX_ATTEMPTS must be a whole number"),
        ("NOTIFIER_RETRY_BASE_SECONDS", "soon", "NOTIFIER_RETRY_BASE_SECONDS must be a number"),
        ("NOTIFIER_ALERTMANAGER_URL", "alertmanager:9093", "NOTIFIER_ALERTMANAGER_URL must be an http or https URL"),
    ],
)
def test_notifier_refuses_bad_delivery_settings(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        load({name: value})


async def test_subscriptions_over_grpc_a_department_for_itself_and_refusals_store_nothing(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys")
    settings = load(service_environ("notifier", tmp_path, own_nats_server.url, "sqlite"))
    async with (
        running_service(build, settings, keys) as runtime,
        grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
    ):
        app = runtime.parts.app
        assert app is not None
        stub = pb_grpc.NotifierServiceStub(channel)
        finance, it = keys.metadata("department", "finance"), keys.metadata("department", "it")
        made = await stub.Subscribe(
            pb.SubscribeRequest(url="https://hooks.example/finance", secret=SECRET,
                                kinds=[pb.NOTIFICATION_KIND_BREACH]),
            metadata=finance,
        )  # fmt: skip
        s = made.subscription
        assert (s.department_id, s.url, list(s.kinds), s.active) == (
            "finance", "https://hooks.example/finance", [pb.NOTIFICATION_KIND_BREACH], True,
        )  # fmt: skip
        listed = await stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=finance)
        assert [x.subscription_id for x in listed.subscriptions] == [s.subscription_id]
        assert "secret" not in str(listed) and SECRET not in str(listed)
        head = app.head_position()

        refusals = [
            (stub.Subscribe(pb.SubscribeRequest(department_id="finance", url="https://x.example/", secret=SECRET),
                            metadata=it), grpc.StatusCode.PERMISSION_DENIED, "may not act for department 'finance'"),
            (stub.Subscribe(pb.SubscribeRequest(url="ftp://x.example/", secret=SECRET), metadata=it),
             grpc.StatusCode.INVALID_ARGUMENT, "must be an http or https URL"),
            (stub.Subscribe(pb.SubscribeRequest(url="https://x.example/", secret="short"), metadata=it),
             grpc.StatusCode.INVALID_ARGUMENT, "secret must be at least 16 characters"),
            (stub.Subscribe(pb.SubscribeRequest(url="https://x.example/", secret=SECRET,
                                                kinds=[pb.NOTIFICATION_KIND_UNSPECIFIED]), metadata=it),
             grpc.StatusCode.INVALID_ARGUMENT, "NOTIFICATION_KIND_UNSPECIFIED is not a kind"),
            (stub.Subscribe(pb.SubscribeRequest(url="https://x.example/", secret=SECRET),
                            metadata=keys.metadata("auditor")), grpc.StatusCode.PERMISSION_DENIED, ""),
            (stub.Subscribe(pb.SubscribeRequest(url="https://x.example/", secret=SECRET)),
             grpc.StatusCode.UNAUTHENTICATED, ""),
            (stub.Subscribe(pb.SubscribeRequest(url="https://x.example/", secret=SECRET),
                            metadata=keys.metadata("admin")), grpc.StatusCode.INVALID_ARGUMENT,
             "department_id is required"),
            (stub.Unsubscribe(pb.UnsubscribeRequest(subscription_id=s.subscription_id), metadata=it),
             grpc.StatusCode.NOT_FOUND, "has no subscription"),
            (stub.Unsubscribe(pb.UnsubscribeRequest(), metadata=finance),
             grpc.StatusCode.INVALID_ARGUMENT, "subscription_id is required"),
            (stub.ListDeliveries(pb.ListDeliveriesRequest(department_id="finance"), metadata=it),
             grpc.StatusCode.PERMISSION_DENIED, "may not act for department 'finance'"),
        ]  # fmt: skip
        for call, code, says in refusals:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == code, (code, err.value.details())
            assert says in (err.value.details() or ""), err.value.details()
        assert app.head_position() == head  # nothing stored by any refusal

        # An admin acts for any department; an unsubscribed subscription stays listed, inactive.
        admin = keys.metadata("admin")
        gone = await stub.Unsubscribe(
            pb.UnsubscribeRequest(department_id="finance", subscription_id=s.subscription_id), metadata=admin
        )
        assert gone.subscription.active is False
        listed = await stub.ListSubscriptions(pb.ListSubscriptionsRequest(department_id="finance"), metadata=admin)
        assert [x.active for x in listed.subscriptions] == [False]
        audit = await stub.ListDeliveries(pb.ListDeliveriesRequest(department_id="finance"),
                                          metadata=keys.metadata("auditor"))  # fmt: skip
        assert list(audit.deliveries) == []
