"""The per-process event writer: no wait when idle, batches under load, one write per job in
a batch, per-job refusals and failures reach only their writers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from jobql.events.types import EventType, StoredEvent
from jobql.repositories.store import EventWrite, NewEvent
from jobql.states import Usage
from jobql.worker.writer import EventWriter

AT = datetime(2026, 1, 1, tzinfo=UTC)


class RecordingStore:
    """Answers append_events like a store (seqs per job), records each batch, and can be
    held so that writes pile up behind a batch in flight."""

    def __init__(self) -> None:
        self.batches: list[list[EventWrite]] = []
        self.seqs: dict[str, int] = {}
        self.lost: set[str] = set()
        self.release = asyncio.Event()
        self.release.set()
        self.entered = asyncio.Event()
        self.fail_with: Exception | None = None

    async def append_events(self, writes: Sequence[EventWrite]) -> list[list[StoredEvent] | None]:
        self.batches.append(list(writes))
        self.entered.set()
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        results: list[list[StoredEvent] | None] = []
        for write in writes:
            if write.job_id in self.lost:
                results.append(None)
                continue
            stored = []
            for e in write.events:
                self.seqs[write.job_id] = self.seqs.get(write.job_id, 0) + 1
                stored.append(
                    StoredEvent(write.job_id, self.seqs[write.job_id], e.type, e.payload, AT)
                )
            results.append(stored)
        return results


def delta(job_id: str, text: str = "x", n: int = 1) -> EventWrite:
    events = tuple(NewEvent(EventType.OUTPUT_DELTA, {"text": text}) for _ in range(n))
    return EventWrite(job_id, "w", events, Usage())


async def started(store: RecordingStore, **kwargs: int) -> EventWriter:
    writer = EventWriter(store, **kwargs)  # type: ignore[arg-type]
    writer.start()
    return writer


async def test_a_lone_write_goes_out_at_once_in_a_batch_of_its_own() -> None:
    store = RecordingStore()
    writer = await started(store)
    (event,) = await writer.write(delta("a")) or []
    assert event.seq == 1
    assert [[w.job_id for w in b] for b in store.batches] == [["a"]]
    await writer.aclose()


async def test_writes_that_arrive_together_share_one_batch() -> None:
    store = RecordingStore()
    writer = await started(store)
    results = await asyncio.gather(*(writer.write(delta(f"j{i}")) for i in range(10)))
    assert len(store.batches) == 1
    assert sorted(w.job_id for w in store.batches[0]) == [f"j{i}" for i in range(10)]
    assert all(r is not None and r[0].job_id == f"j{i}" for i, r in enumerate(results))
    assert writer.batches == 1
    await writer.aclose()


async def test_writes_arriving_during_a_batch_go_out_together_in_the_next() -> None:
    store = RecordingStore()
    writer = await started(store)
    store.release.clear()
    first = asyncio.create_task(writer.write(delta("a")))
    await store.entered.wait()
    later = [asyncio.create_task(writer.write(delta(f"b{i}"))) for i in range(5)]
    await asyncio.sleep(0)  # let them queue behind the batch in flight
    assert writer.backlog == 5
    store.release.set()
    await asyncio.gather(first, *later)
    assert [len(b) for b in store.batches] == [1, 5]
    await writer.aclose()


async def test_two_writes_of_one_job_never_share_a_batch_and_keep_their_order() -> None:
    store = RecordingStore()
    writer = await started(store)
    one, two = await asyncio.gather(writer.write(delta("a", "1")), writer.write(delta("a", "2")))
    assert [[w.job_id for w in b] for b in store.batches] == [["a"], ["a"]]
    assert one is not None
    assert two is not None
    assert (one[0].seq, two[0].seq) == (1, 2)
    await writer.aclose()


async def test_a_batch_holds_at_most_max_batch_events() -> None:
    store = RecordingStore()
    writer = await started(store, max_batch=4)
    await asyncio.gather(*(writer.write(delta(f"j{i}", n=3)) for i in range(3)))
    assert [sum(len(w.events) for w in b) for b in store.batches] == [3, 3, 3]
    await writer.aclose()


async def test_a_lost_lease_answers_none_to_its_writer_only() -> None:
    store = RecordingStore()
    store.lost.add("gone")
    writer = await started(store)
    kept, lost = await asyncio.gather(writer.write(delta("kept")), writer.write(delta("gone")))
    assert kept is not None
    assert lost is None
    await writer.aclose()


async def test_a_failed_batch_raises_in_each_of_its_writers_and_the_writer_goes_on() -> None:
    store = RecordingStore()
    store.fail_with = ConnectionError("database went away")
    writer = await started(store)
    results = await asyncio.gather(
        writer.write(delta("a")), writer.write(delta("b")), return_exceptions=True
    )
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    store.fail_with = None
    assert await writer.write(delta("c")) is not None
    await writer.aclose()


async def test_writing_before_start_is_an_error() -> None:
    writer = EventWriter(RecordingStore())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        await writer.write(delta("a"))


async def test_a_store_answering_the_wrong_number_of_results_fails_its_writers_only() -> None:
    store = RecordingStore()
    writer = await started(store)
    answer = store.append_events

    async def short(writes: Sequence[EventWrite]) -> list[list[StoredEvent] | None]:
        return (await answer(writes))[:-1]

    store.append_events = short  # type: ignore[method-assign]
    results = await asyncio.gather(
        writer.write(delta("a")), writer.write(delta("b")), return_exceptions=True
    )
    assert [type(r) for r in results] == [ValueError, ValueError]
    store.append_events = answer  # type: ignore[method-assign]
    assert await writer.write(delta("c")) is not None
    await writer.aclose()


async def test_writes_fail_instead_of_hanging_when_the_writer_loop_dies() -> None:
    writer = await started(RecordingStore())

    def broken() -> list[object]:
        raise AssertionError("a bug in the writer")

    writer._take = broken  # type: ignore[assignment,method-assign]
    with pytest.raises(RuntimeError, match="event writer stopped"):
        await writer.write(delta("a"))
    with pytest.raises(RuntimeError, match="event writer stopped"):
        await writer.write(delta("b"))
    await writer.aclose()
