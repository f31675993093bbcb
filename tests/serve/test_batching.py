"""Dynamic batching: concurrent requests are decoded in fewer batches than requests, each answer going back
to its own caller and equal to offline decoding; different settings never share a batch; a short load test
has no errors and no wrong answers."""

import asyncio
import random
import threading
import time

import httpx
import pytest

from tests.serve.conftest import TEXTS
from transformer.serve.app import create_app
from transformer.serve.batching import DynamicBatcher, QueueFull
from transformer.serve.settings import ServeSettings


def _recording_runner(calls):
    def run(key, items):
        calls.append((key, list(items)))
        return [ValueError(f"bad {item}") if item == "bad" else (key, item.upper()) for item in items]
    return run


def test_jobs_within_the_wait_are_one_batch_per_key_each_answer_to_its_caller():
    calls = []
    batcher = DynamicBatcher(_recording_runner(calls), max_batch=16, wait_ms=200)

    async def main():
        jobs = [("a", "x"), ("b", "y"), ("a", "z"), ("a", "bad"), ("b", "w")]
        return await asyncio.gather(*(batcher.submit(key, item) for key, item in jobs), return_exceptions=True)

    results = asyncio.run(main())
    batcher.stop()
    assert results[:3] == [("a", "X"), ("b", "Y"), ("a", "Z")] and results[4] == ("b", "W")
    assert isinstance(results[3], ValueError) and str(results[3]) == "bad bad"  # only its own caller fails
    assert sorted(calls) == [("a", ["x", "z", "bad"]), ("b", ["y", "w"])]  # settings never mixed
    assert (batcher.stats.batches, batcher.stats.requests, batcher.stats.largest_batch) == (2, 5, 3)


def test_max_batch_one_runs_each_job_alone_and_a_full_queue_is_refused():
    calls, release = [], threading.Event()

    def run(key, items):
        calls.append(items)
        release.wait(5)
        return [item.upper() for item in items]

    batcher = DynamicBatcher(run, max_batch=1, wait_ms=50, max_queue=2)

    async def main():
        jobs = [asyncio.ensure_future(batcher.submit("k", "p"))]
        while not calls:  # "p" is running
            await asyncio.sleep(0.001)
        jobs += [asyncio.ensure_future(batcher.submit("k", item)) for item in ("q", "r")]
        await asyncio.sleep(0.01)  # "q" and "r" wait: the queue is full
        with pytest.raises(QueueFull, match="--max-queue 2"):
            await batcher.submit("k", "s")
        release.set()
        return await asyncio.gather(*jobs)

    assert asyncio.run(main()) == ["P", "Q", "R"]
    batcher.stop()
    assert calls == [["p"], ["q"], ["r"]]  # one at a time, though all waited within 50 ms


def test_a_job_whose_caller_gave_up_is_not_run():
    calls, release = [], threading.Event()

    def run(key, items):
        calls.append(items)
        release.wait(5)
        return items

    batcher = DynamicBatcher(run, max_batch=1, wait_ms=0)

    async def main():
        busy = asyncio.ensure_future(batcher.submit("k", "first"))
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit("k", "abandoned"), 0.01)
        release.set()
        return await busy

    assert asyncio.run(main()) == "first"
    batcher.stop()
    assert calls == [["first"]]


async def _post_all(app, bodies):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = await asyncio.gather(*(client.post("/api/translate", json=body) for body in bodies))
    return [r.json() for r in responses]


def test_concurrent_requests_are_decoded_in_fewer_batches_each_getting_its_own_answer(translation_dir, offline):
    app = create_app(translation_dir, ServeSettings(max_batch=32, batch_wait_ms=100))
    bodies = [{"text": text, "beam": 2, "nbest": 2} for text in TEXTS] + [{"text": t, "beam": 1} for t in TEXTS]
    answers = asyncio.run(_post_all(app, bodies))
    app.state.batcher.stop()
    stats = app.state.batcher.stats
    assert stats.requests == len(bodies) and stats.batches < len(bodies) and stats.largest_batch > 1
    expected = {**{(t, 2): offline.translate([t], beam=2)[0] for t in TEXTS},
                **{(t, 1): offline.translate([t], beam=1)[0] for t in TEXTS}}
    assert len(set(expected.values())) >= len(TEXTS)  # a wrongly routed answer would show
    for body, answer in zip(bodies, answers, strict=True):
        assert answer["translation"] == expected[body["text"], body["beam"]], body
        assert len(answer["nbest"]) == body.get("nbest", 1)


def test_a_short_load_test_has_no_errors_and_no_wrong_answers(translation_dir, offline):
    app = create_app(translation_dir, ServeSettings(max_batch=8, batch_wait_ms=2))
    expected = dict(zip(TEXTS, offline.translate(TEXTS, beam=2), strict=True))
    assert len(set(expected.values())) > len(TEXTS) // 2
    counts = {"ok": 0, "errors": 0, "wrong": 0}

    async def client_loop(client, seed, stop_at):
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            text = rng.choice(TEXTS)
            response = await client.post("/api/translate", json={"text": text, "beam": 2})
            if response.status_code != 200:
                counts["errors"] += 1
            elif response.json()["translation"] != expected[text]:
                counts["wrong"] += 1
            else:
                counts["ok"] += 1

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            stop_at = time.monotonic() + 2.0
            await asyncio.gather(*(client_loop(client, seed, stop_at) for seed in range(6)))

    asyncio.run(main())
    app.state.batcher.stop()
    assert counts["errors"] == 0 and counts["wrong"] == 0 and counts["ok"] > 20, counts
    assert app.state.batcher.stats.batches < counts["ok"]  # the clients' requests shared batches


def test_searches_on_threads_sharing_the_packed_model_agree_with_sequential_ones(offline):
    """The batcher needs one worker thread only for speed: searches share no mutable state (packed weights are
    read-only, each search makes its own KV caches), so concurrent ones give the sequential answers."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(TEXTS[i:] + TEXTS[:i], 1 + i % 3) for i in range(8)]  # (texts, beam)
    sequential = [offline.translate(texts, beam=beam) for texts, beam in jobs]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda job: offline.translate(job[0], beam=job[1]), jobs))
    assert concurrent == sequential
