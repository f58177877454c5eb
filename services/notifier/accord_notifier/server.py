"""The NotifierService gRPC servicer: protobuf ⇄ the application's records; errors through ERROR_MAP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from accord.notifier.v1 import notifier_pb2 as pb
from accord.notifier.v1 import notifier_pb2_grpc as pb_grpc
from accord_kit.context import current_principal
from accord_kit.threads import finish_in_thread
from accord_notifier.application import Notifier
from accord_notifier.codec import kind_number
from accord_notifier.domain import InvalidRequestError, NotFoundError, Notification, NotYourDepartmentError

ERROR_MAP: dict[type[BaseException], grpc.StatusCode] = {
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    NotYourDepartmentError: grpc.StatusCode.PERMISSION_DENIED,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
}
PREFIX = "NOTIFICATION_KIND_"


def subscription_message(s: dict[str, Any]) -> pb.Subscription:
    return pb.Subscription(
        subscription_id=s["subscription_id"], department_id=s["department_id"], url=s["url"],
        kinds=[kind_number(k) for k in s["kinds"]], created_at=s["created_at"], active=s["active"],
    )  # fmt: skip


def delivery_message(n: Notification) -> pb.Delivery:
    return pb.Delivery(
        notification_id=str(n.id), kind=kind_number(n.kind), department_id=n.department_id,
        subscription_id=n.subscription_id, target=n.target, agreement_id=n.agreement_id,
        source_event_id=n.source_event_id, state=pb.DeliveryState.Value(f"DELIVERY_STATE_{n.state}"),
        queued_at=n.queued_at, not_before=n.not_before, outcome=n.outcome,
        attempts=[
            pb.DeliveryAttempt(attempt=a["attempt"], at=a["at"], status_code=a["status_code"], error=a["error"],
                               next_attempt_at=a["next_attempt_at"])
            for a in n.attempts
        ],
    )  # fmt: skip


def kinds_of(numbers: Any) -> list[str]:
    out = []
    for k in numbers:
        if k == pb.NOTIFICATION_KIND_UNSPECIFIED:
            raise InvalidRequestError("kinds: NOTIFICATION_KIND_UNSPECIFIED is not a kind")
        out.append(pb.NotificationKind.Name(k).removeprefix(PREFIX))
    return out


class NotifierServicer(pb_grpc.NotifierServiceServicer):
    def __init__(self, app: Notifier) -> None:
        self.app = app

    async def Subscribe(self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext) -> pb.SubscribeResponse:
        caller = current_principal()
        kinds = kinds_of(request.kinds)
        s = await finish_in_thread(
            self.app.subscribe, caller, request.department_id, request.url, request.secret, kinds
        )
        return pb.SubscribeResponse(subscription=subscription_message(s))

    async def Unsubscribe(
        self, request: pb.UnsubscribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnsubscribeResponse:
        caller = current_principal()
        s = await finish_in_thread(self.app.unsubscribe, caller, request.department_id, request.subscription_id)
        return pb.UnsubscribeResponse(subscription=subscription_message(s))

    async def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSubscriptionsResponse:
        caller = current_principal()
        subs = await finish_in_thread(self.app.list_subscriptions, caller, request.department_id)
        return pb.ListSubscriptionsResponse(subscriptions=[subscription_message(s) for s in subs])

    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeliveriesResponse:
        caller = current_principal()
        found = await finish_in_thread(
            self.app.list_deliveries, caller, request.department_id, request.subscription_id, request.limit
        )
        return pb.ListDeliveriesResponse(deliveries=[delivery_message(n) for n in found])


def register_notifier(app: Notifier) -> Callable[[grpc.aio.Server], str]:
    def register(server: grpc.aio.Server) -> str:
        pb_grpc.add_NotifierServiceServicer_to_server(NotifierServicer(app), server)
        return str(pb.DESCRIPTOR.services_by_name["NotifierService"].full_name)

    return register
