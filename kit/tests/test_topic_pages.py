"""`topic_pages`: an index that tails some topics of a log reads them page by page, and its
next look starts at the head it reached — not at its topics' last event — so the events of
other topics stored after that event are not scanned again on every look. On both stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from accord_kit.application import topic_pages
from accord_kit.testing.counter import Counter, Counters
from accord_kit.topics import event_topics

CREATED = [t for t in event_topics(Counter) if t.endswith("Created")]


def _looks(recorder: Any, after: int, limit: int) -> tuple[list[list[str]], int, list[int]]:
    """One look: the names of the counters created on each page, the position read up to,
    and where each of the look's queries started."""
    starts: list[int] = []
    select = recorder.select_notifications

    def spying(*args: Any, **kwargs: Any) -> Any:
        starts.append(kwargs["start"])
        return select(*args, **kwargs)

    recorder.select_notifications = spying
    try:
        pages, read_to = [], after
        for notes, position in topic_pages(recorder, after, CREATED, limit):
            pages.append([n.originator_id for n in notes])
            read_to = position
        return pages, read_to, starts
    finally:
        del recorder.select_notifications


def test_a_look_reads_its_topics_page_by_page_and_the_next_starts_at_the_head(
    make_store_env: Callable[[str], dict[str, str]],
) -> None:
    app = Counters(make_store_env("pages"))
    try:
        counters = [Counter(name) for name in ("a", "b", "c")]
        app.save(*counters)
        created_at = app.recorder.max_notification_id() or 0
        for _ in range(40):  # events of another topic after the last creation
            counters[0].increment(1)
        app.save(counters[0])
        head = app.recorder.max_notification_id() or 0
        assert head == created_at + 40

        pages, read_to, starts = _looks(app.recorder, 0, 2)
        assert pages == [[counters[0].id, counters[1].id], [counters[2].id]]
        assert read_to == head  # the last page reads up to the head, not to the last creation
        assert starts == [0, starts[1]] and starts[1] < created_at

        # Nothing new: one query, from the head; the 40 increments are not scanned again.
        pages, again, starts = _looks(app.recorder, read_to, 2)
        assert (pages, again, starts) == ([[]], head, [head])

        # A creation and more increments: found, and read up to the new head.
        d = Counter("d")
        d.increment(5)
        app.save(d)
        pages, later, starts = _looks(app.recorder, again, 2)
        assert pages == [[d.id]]
        assert later == app.recorder.max_notification_id() == head + 2
        assert starts == [head]

        # A page that comes back full is not the last: the next page starts after its last event.
        e, f = Counter("e"), Counter("f")
        app.save(e, f)
        pages, _, starts = _looks(app.recorder, later, 2)
        assert pages == [[e.id, f.id], []]
        assert starts == [later, later + 2]
    finally:
        app.close()
