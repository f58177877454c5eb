"""Fixtures of the metrics service's own tests: altering a stored signal in the database
behind the service's back, as an attacker (or a careless operator) with write access would."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from accord.metrics.v1 import signals_pb2 as pb
from tests.suite import alter_stored_signal as suite_alter_stored_signal

Alter = Callable[[dict[str, str], str, str, Callable[[pb.Signal], None]], None]


@pytest.fixture
def alter_stored_signal() -> Alter:
    return suite_alter_stored_signal
