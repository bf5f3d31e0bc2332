"""Many consumers racing for the same tokens across three workers: exactly one wins each."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

from conftest import unique

from tessera_client import AsyncTessera, InvalidOrExpiredToken, Tessera

TOKENS = 50
CONSUMERS = 100


def test_100_threads_race_for_50_tokens(clients: list[Tessera]) -> None:
    user = unique("race")
    tokens = [clients[0].issue_token("pre_auth", username=user).token for _ in range(TOKENS)]
    wins: Counter[str] = Counter()
    losses: Counter[str] = Counter()
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(CONSUMERS)

    def consumer(i: int) -> None:
        client = clients[i % len(clients)]
        start.wait()
        for token in tokens:
            try:
                got = client.consume_token("pre_auth", token)
                assert got.username == user
                outcome = wins
            except InvalidOrExpiredToken:
                outcome = losses
            except BaseException as e:
                with lock:
                    failures.append(e)
                continue
            with lock:
                outcome[token] += 1

    threads = [threading.Thread(target=consumer, args=(i,)) for i in range(CONSUMERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert all(wins[t] == 1 for t in tokens), wins
    assert all(losses[t] == CONSUMERS - 1 for t in tokens)


async def test_100_tasks_race_for_50_tokens(async_clients: list[AsyncTessera]) -> None:
    user = unique("arace")
    tokens = [
        (await async_clients[1].issue_token("pre_auth", username=user)).token for _ in range(TOKENS)
    ]
    start = asyncio.Event()

    async def consumer(i: int) -> list[str]:
        client = async_clients[i % len(async_clients)]
        await start.wait()
        won = []
        for token in tokens:
            try:
                await client.consume_token("pre_auth", token)
                won.append(token)
            except InvalidOrExpiredToken:
                pass
        return won

    tasks = [asyncio.create_task(consumer(i)) for i in range(CONSUMERS)]
    await asyncio.sleep(0)
    start.set()
    wins = Counter(t for won in await asyncio.gather(*tasks) for t in won)
    assert wins == Counter(tokens)
