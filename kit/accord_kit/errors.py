"""Errors the gRPC edge turns into status codes. Services map their domain errors to
these (or pass their own mapping to the server factory)."""

from __future__ import annotations

import grpc


class AccordError(Exception):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(AccordError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(AccordError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(AccordError):
    code = grpc.StatusCode.ALREADY_EXISTS


class ConflictError(AccordError):
    """A concurrent change won (expected version mismatch): the client may retry."""

    code = grpc.StatusCode.ABORTED


class FailedPreconditionError(AccordError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDeniedError(AccordError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnauthenticatedError(AccordError):
    code = grpc.StatusCode.UNAUTHENTICATED


class UnavailableError(AccordError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(AccordError):
    """Stored data the answer needs is damaged (a record that cannot be read, or a log
    found tampered with): the message names what and, when known, the position."""

    code = grpc.StatusCode.DATA_LOSS
