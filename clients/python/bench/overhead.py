"""What the client costs over bare httpx: `Tessera.hit` against the same request made with
one `httpx.Client` (post, check the status, parse the JSON), at 1 and 32 threads, against
one `tessera serve` worker started here (tokens and limits on a redis-server of its own,
accounts in a SQLite file).

    .venv/bin/python clients/python/bench/overhead.py [--seconds 3] [--runs 3]

The two are measured in the same run, interleaved (the order alternates from run to run);
each figure is the median of the runs' calls per second. Uses target/release/tessera when
it exists, else target/debug/tessera (`TESSERA_BIN` overrides).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tessera_client import Tessera

REPO = Path(__file__).resolve().parents[3]
API_KEY = "bench-key"
EVENT = "bench"
LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def worker_binary() -> Path:
    if "TESSERA_BIN" in os.environ:
        return Path(os.environ["TESSERA_BIN"])
    release = REPO / "target" / "release" / "tessera"
    return release if release.exists() else REPO / "target" / "debug" / "tessera"


def wait_until(ready: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (OSError, httpx.TransportError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


@contextmanager
def one_worker(bin: Path) -> Iterator[str]:
    """A worker on a fresh redis-server and SQLite file; yields its base URL."""
    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as d:
        redis_port, port = free_port(), free_port()
        redis_args = ["--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
        redis = subprocess.Popen(
            ["redis-server", *redis_args, "--appendonly", "no", "--dir", d],
            stdout=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(redis_port), "redis")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
        env |= {
            "TESSERA_DATABASE_URL": f"sqlite://{d}/bench.db?mode=rwc",
            "TESSERA_REDIS_URL": f"redis://127.0.0.1:{redis_port}",
            "TESSERA_SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
            "TESSERA_API_KEYS": API_KEY,
            "TESSERA_RATE_LIMITS": f"{EVENT}=1000000000/1m~",
            "TESSERA_PORT": str(port),
            "TESSERA_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "TESSERA_LOG": "warn",
        }
        worker = subprocess.Popen([str(bin), "serve"], env=env, cwd=d)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, "tessera serve")
            yield url
        finally:
            worker.terminate()
            worker.wait()
            redis.terminate()
            redis.wait()


def calls_per_second(call: Callable[[str], object], threads: int, seconds: float) -> float:
    """Runs `call(key)` in `threads` threads for `seconds`; answers calls per second."""
    stop = threading.Event()
    counts = [0] * threads
    start = threading.Barrier(threads + 1)

    def loop(i: int) -> None:
        key = f"k{i}"
        start.wait()
        while not stop.is_set():
            call(key)
            counts[i] += 1

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bin = worker_binary()

    with one_worker(bin) as url:
        client = Tessera(url, API_KEY, transport=httpx.HTTPTransport(limits=LIMITS))
        bare = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {API_KEY}"},
            transport=httpx.HTTPTransport(limits=LIMITS),
        )

        def with_client(key: str) -> object:
            return client.hit(EVENT, key)

        def with_httpx(key: str) -> object:
            r = bare.post("/v1/ratelimit/hit", json={"event": EVENT, "key": key, "cost": 1})
            if r.status_code != 200:
                raise RuntimeError(r.text)
            return r.json()

        calls_per_second(with_client, 4, 0.5)  # warm up connections and the server
        calls_per_second(with_httpx, 4, 0.5)
        print(
            f"hit through tessera_client vs bare httpx; one worker ({bin.relative_to(REPO)}, "
            f"Redis), {args.seconds:g} s per measurement, median of {args.runs} runs"
        )
        print(f"{'threads':>7}  {'client calls/s':>14}  {'bare calls/s':>12}  client/bare")
        for threads in (1, 32):
            results: dict[str, list[float]] = {"client": [], "bare": []}
            for run in range(args.runs):
                order = [("client", with_client), ("bare", with_httpx)]
                for name, call in order if run % 2 == 0 else order[::-1]:
                    results[name].append(calls_per_second(call, threads, args.seconds))
            c, b = statistics.median(results["client"]), statistics.median(results["bare"])
            print(f"{threads:>7}  {c:>14.0f}  {b:>12.0f}  {c / b:>10.1%}")
        client.close()
        bare.close()


if __name__ == "__main__":
    main()
