"""Stable stored names ("topics") of aggregates and their events.

A store keeps, with every event, the name of its class; eventsourcing would derive it from
the class's module path (`accord_agreements.domain:Agreement.DraftRevised`), so moving a class
or splitting a module would leave existing stores unreadable. Every aggregate the suite stores
therefore declares its name with `@stored_as("...")`, and each of its events declares its own:
a `TOPIC = "..."` attribute on an event class, `@event("Name", topic="...")` on a decorated
method. The names are the strings the stores already hold (today's module paths); they are
names, not locations, and never change when the code moves.

`stored_as` registers the aggregate's and its events' names with eventsourcing
(`register_topic`), so a stored name resolves to its class wherever the class lives, and it
refuses, at import, an event without a declared name of its own or a name used twice. With the
aggregate's name set, eventsourcing also refuses to record an event whose name is not declared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from eventsourcing.domain import Aggregate, CanMutateAggregate
from eventsourcing.utils import TopicError, register_topic

A = TypeVar("A", bound=type[Aggregate])

# Every declared name → its class, in the order they were declared (all imported domains).
DECLARED: dict[str, type] = {}


def _own_topic(event_class: type) -> str | None:
    """The name `event_class` declares itself, not one inherited from another event. eventsourcing
    subclasses an event class written in an aggregate's body (to derive it from the aggregate's
    base event, and again for a method decorated with it), keeping its qualified name: the TOPIC
    of any class of that name in its MRO counts as its own."""
    for cls in event_class.__mro__:
        if cls.__qualname__ == event_class.__qualname__ and "TOPIC" in cls.__dict__:
            own = cls.__dict__["TOPIC"]
            return own if isinstance(own, str) and own else None
    return None


def _from_base(name: str, event_class: type) -> bool:
    """Whether `event_class` is one eventsourcing defines on every aggregate from its base
    (`Event`, `Created`) rather than one the aggregate declares: never stored, and refused by
    eventsourcing if triggered on an aggregate with a stored name."""
    base = getattr(Aggregate, name, None)
    return base is not None and base in event_class.__bases__ and _own_topic(event_class) is None


def _events(aggregate: type[Aggregate]) -> dict[str, type]:
    """The aggregate's own event classes by attribute name."""
    return {
        name: value
        for name, value in vars(aggregate).items()
        if isinstance(value, type)
        and issubclass(value, CanMutateAggregate)
        and name.lower() != name
        and not _from_base(name, value)
    }


def event_classes(aggregate: type[Aggregate]) -> dict[str, type]:
    """The aggregate's stored event classes by their declared names."""
    out: dict[str, type] = {}
    for value in _events(aggregate).values():
        topic = _own_topic(value)
        if topic is not None:
            out[topic] = value
    return out


def event_topics(aggregate: type[Aggregate]) -> frozenset[str]:
    """The declared names of the aggregate's stored events."""
    return frozenset(event_classes(aggregate))


def _declare(topic: str, cls: type) -> None:
    try:
        register_topic(topic, cls)
    except TopicError:
        raise TypeError(f"the stored name {topic!r} of {cls.__qualname__} is already {DECLARED.get(topic)}") from None
    DECLARED[topic] = cls


def stored_as(topic: str) -> Callable[[A], A]:
    """Class decorator: the aggregate's stored name is `topic`; registers it and its events'
    declared names. Raises TypeError if an event of the aggregate declares no name of its own,
    or a name is already taken."""

    def declare(aggregate: A) -> A:
        if "TOPIC" in vars(aggregate):
            raise TypeError(f"{aggregate.__qualname__}: declare its stored name with @stored_as only")
        for name, value in _events(aggregate).items():
            if _own_topic(value) is None:
                raise TypeError(
                    f"{aggregate.__qualname__}.{name} declares no stored name: give it TOPIC = '...' "
                    "(or @event(..., topic='...'))"
                )
        aggregate_class: Any = aggregate
        aggregate_class.TOPIC = topic
        _declare(topic, aggregate)
        for event_topic, event_class in event_classes(aggregate).items():
            _declare(event_topic, event_class)
        return aggregate

    return declare
