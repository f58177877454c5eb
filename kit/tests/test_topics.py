"""Declared stored names (accord_kit.topics): a stored event whose class lives somewhere else than
its name says still loads, found through the declaration alone; an aggregate with an event that
declares no name of its own, or a name already taken, is refused when it is defined."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import ClassVar

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import TopicError, resolve_topic

from accord_kit.topics import event_topics, stored_as

GONE = "accord_gone_module.domain"  # a module that does not exist: the classes below "moved" here


@stored_as(f"{GONE}:Gadget")
class Gadget(Aggregate):
    Tuned: ClassVar[type[Aggregate.Event]]

    class Made(Aggregate.Created):
        TOPIC = f"{GONE}:Gadget.Made"
        name: str

    @event(Made)
    def __init__(self, name: str) -> None:
        self.name = name
        self.level = 0

    @event("Tuned", topic=f"{GONE}:Gadget.Tuned")
    def tune(self, level: int) -> None:
        self.level = level


def test_a_stored_event_is_found_through_its_declared_name_not_its_module_path(tmp_path: Path) -> None:
    assert importlib.util.find_spec(GONE.split(".")[0]) is None
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "gadgets.sqlite")}
    writer: Application[Gadget] = Application(env=env)  # type: ignore[type-var]
    gadget = Gadget("dial")
    gadget.tune(level=3)
    writer.save(gadget)
    writer.close()
    reader: Application[Gadget] = Application(env=env)  # type: ignore[type-var]
    stored = reader.recorder.select_events(gadget.id)
    assert [s.topic for s in stored] == [f"{GONE}:Gadget.Made", f"{GONE}:Gadget.Tuned"]
    loaded = reader.repository.get(gadget.id)
    assert type(loaded) is Gadget and (loaded.name, loaded.level) == ("dial", 3)
    reader.close()
    assert event_topics(Gadget) == {f"{GONE}:Gadget.Made", f"{GONE}:Gadget.Tuned"}
    # Without a declaration the module path is all there is, and it leads nowhere.
    with pytest.raises(TopicError):
        resolve_topic(f"{GONE}:Other.Made")


def test_an_event_without_a_declared_name_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Widget\.Moved declares no stored name"):

        @stored_as("tests.widgets:Widget")
        class Widget(Aggregate):
            @event("Moved")
            def move(self) -> None:
                pass


def test_an_event_inheriting_another_event_s_name_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Knob\.Turned declares no stored name"):

        @stored_as("tests.knobs:Knob")
        class Knob(Aggregate):
            class Pushed(Aggregate.Event):
                TOPIC = "tests.knobs:Knob.Pushed"

            class Turned(Pushed):
                pass


def test_a_name_already_taken_is_refused() -> None:
    with pytest.raises(TypeError, match=re.escape(f"stored name '{GONE}:Gadget.Made'")):

        @stored_as("tests.copies:Copy")
        class Copy(Aggregate):
            class Made(Aggregate.Created):
                TOPIC = f"{GONE}:Gadget.Made"

            @event(Made)
            def __init__(self) -> None:
                pass
