"""`python -m accord_kit.healthcheck HOST:PORT [SERVICE]`: exit 0 if the gRPC health check says SERVING.

`--alive` exits 0 for NOT_SERVING too: the process is up and answering. That is the container
health of an instance that may be a hot standby (accord_kit.lease), NOT_SERVING by design."""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_SECONDS = 2.0


def check(address: str, service: str = "", timeout: float = TIMEOUT_SECONDS) -> str:
    """The health status name of `service` ("" = the whole server) at `address`; raises grpc.RpcError."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m accord_kit.healthcheck", description="Exit 0 when a gRPC server reports SERVING, 1 otherwise."
    )
    parser.add_argument("address", metavar="HOST:PORT", help="the gRPC server, e.g. 127.0.0.1:7051")
    parser.add_argument("service", nargs="?", default="", help="a service name to check (default: the whole server)")
    parser.add_argument(
        "--alive", action="store_true", help="exit 0 for NOT_SERVING too (a standby is alive, not serving)"
    )
    args = parser.parse_args(argv)
    target = f"{args.address} {args.service}".strip()
    try:
        status = check(args.address, args.service)
    except grpc.RpcError as e:
        code = e.code() if isinstance(e, grpc.Call) else None
        name = code.name if code is not None else "ERROR"
        print(f"{target}: {name} {e.details() if isinstance(e, grpc.Call) else e}", flush=True)
        return 1
    print(f"{target}: {status}", flush=True)
    return 0 if status == "SERVING" or (args.alive and status == "NOT_SERVING") else 1


if __name__ == "__main__":
    sys.exit(main())
