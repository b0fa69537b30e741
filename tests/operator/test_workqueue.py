"""The work queue: dedup, one worker per key, nothing lost while a key is processed."""

from __future__ import annotations

import asyncio

from optiserve_operator.workqueue import WorkQueue


def test_duplicate_adds_make_one_item() -> None:
    async def scenario() -> list[str]:
        queue: WorkQueue[str] = WorkQueue()
        for key in ("a", "b", "a", "a"):
            queue.add(key)
        got = [await queue.get(), await queue.get()]
        assert len(queue) == 0
        return got

    assert asyncio.run(scenario()) == ["a", "b"]


def test_a_key_added_while_processing_comes_back_after_done_only() -> None:
    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a")
        key = await queue.get()
        queue.add("a")  # a child event arrives mid-reconcile
        assert len(queue) == 0  # not handed to a second worker meanwhile
        queue.done(key)
        assert len(queue) == 1
        assert await queue.get() == "a"

    asyncio.run(scenario())


def test_add_after_keeps_the_earliest_request_and_forget_cancels() -> None:
    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add_after("a", 30.0)
        queue.add_after("a", 0.01)  # sooner wins
        queue.add_after("a", 60.0)  # later is ignored
        assert await asyncio.wait_for(queue.get(), timeout=5) == "a"
        queue.done("a")
        queue.add_after("b", 0.01)
        queue.forget("b")
        await asyncio.sleep(0.05)
        assert len(queue) == 0

    asyncio.run(scenario())


def test_an_urgent_key_overtakes_the_queued_ones_and_is_still_deduplicated() -> None:
    async def scenario() -> list[str]:
        queue: WorkQueue[str] = WorkQueue()
        for key in ("a", "b", "c", "d"):
            queue.add(key)
        queue.add("edit", urgent=True)
        queue.add("c", urgent=True)  # already queued: moves up, not in twice
        got = [await queue.get() for _ in range(5)]
        assert len(queue) == 0
        return got

    assert asyncio.run(scenario()) == ["edit", "c", "a", "b", "d"]


def test_an_urgent_add_during_processing_comes_back_urgent() -> None:
    async def scenario() -> list[str]:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a")
        key = await queue.get()
        queue.add("b")
        queue.add("a", urgent=True)  # edited while its worker runs
        queue.done(key)
        return [await queue.get(), await queue.get()]

    assert asyncio.run(scenario()) == ["a", "b"]
