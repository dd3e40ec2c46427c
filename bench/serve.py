"""`ulip2 serve` under load: a large library behind a real server on loopback, many clients
at once, against the same queries run in-process through core's Searcher in the same run.

    python bench/serve.py [--assets 1000000] [--clients 16] [--seconds 20] [--db LIB.sqlite]

The library holds synthetic assets (records only, no files) with clustered unit embeddings
of the shipped default's space (bench/search.py's model), written through Library.write_batch
into a temporary folder, or kept in --db to be reused by a later run (1M: 46 s to build,
2.4 GB, and 1.5 GB of ANN index beside it). Each of --clients threads sends like queries (a
random asset id) for --seconds, then text queries for as long (LVIS names with a word and
this run's own tag, each sent once, so no text cache helps), over one keep-alive connection each; latency is the whole HTTP round trip. The baseline runs
the same kinds of query in this process, one at a time, on one Searcher. The server is
`ulip2 serve` in a process of its own, the clients threads of this one. Last line: JSON.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from search import DIM, percentiles, synthetic  # noqa: E402  (bench/search.py's embedding model)

from core.bundle import default_bundle_path, read_bundle  # noqa: E402
from core.library.keys import bundle_id  # noqa: E402
from core.library.search import Searcher  # noqa: E402
from core.library.store import AssetRecord, Library  # noqa: E402
from core.spaces.vocabularies import load_vocabulary, prompt_name  # noqa: E402

BATCH = 20_000
STYLES = ("wooden", "metal", "old", "small", "large", "painted", "broken", "modern")


def build(db: Path, n: int, bundle) -> None:
    """n synthetic assets with embeddings of `bundle` in a new library at `db`."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = rng.standard_normal((16, 24, DIM)).astype(np.float32) / np.sqrt(DIM / 24)
    key = bundle_id(bundle)
    started = time.perf_counter()
    with Library(db) as library:
        for start in range(0, n, BATCH):
            vectors = synthetic(min(BATCH, n - start), rng, centres, basis)
            records = [AssetRecord(f"/mnt/assets/set{(start + i) // 1000:04d}/asset{start + i:07d}.glb", 1000, 0,
                                   f"{start + i:064x}", vector, None) for i, vector in enumerate(vectors)]
            library.write_batch(key, bundle.space, records, [], [])
            print(f"\rbuilding the library: {start + len(records):,} of {n:,} assets "
                  f"({time.perf_counter() - started:.0f} s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def client_loop(port: int, paths: list[str], until: float, latencies: list[float], failures: list[str]) -> None:
    """One client: `paths` in turn (cycling) over one keep-alive connection until `until`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for path in itertools.cycle(paths):
        if time.perf_counter() >= until:
            break
        started = time.perf_counter()
        connection.request("GET", path)
        reply = connection.getresponse()
        body = reply.read()
        latencies.append(time.perf_counter() - started)
        if reply.status != 200:
            failures.append(f"{path}: {reply.status} {body[:200]!r}")
    connection.close()


def resident_mb(pid: int) -> float | None:
    """The process's resident memory (Linux: /proc), None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def load(port: int, paths: list[str], clients: int, seconds: float) -> dict:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    until = time.perf_counter() + seconds
    threads = [threading.Thread(target=client_loop, args=(port, paths[i::clients], until, latencies[i], failures))
               for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    every = [t for per_client in latencies for t in per_client]
    p50, p99 = percentiles(every)
    return {"queries": len(every), "qps": round(len(every) / elapsed, 1), "p50_ms": p50, "p99_ms": p99,
            "failures": len(failures), "first_failure": failures[0] if failures else None}


def in_process(db: Path, bundle, asset_ids: list[int], phrases: list[str], count: int) -> dict:
    """The baseline: the same kinds of query through one Searcher in this process, in turn."""
    out = {}
    with Library(db, read_only=True) as library:
        searcher = Searcher(library, bundle)
        searcher.search(searcher.asset_vector(asset_ids[0]), 10)  # loads the embeddings and the ANN index
        for kind, one in (("like", lambda i: searcher.search(searcher.asset_vector(asset_ids[i]), 10,
                                                             exclude=asset_ids[i])),
                          ("text", lambda i: searcher.search(searcher.text_vector(phrases[i]), 10))):
            times = []
            for i in range(count):
                started = time.perf_counter()
                one(i % len(phrases) if kind == "text" else i)
                times.append(time.perf_counter() - started)
            p50, p99 = percentiles(times)
            out[kind] = {"qps": round(count / sum(times), 1), "p50_ms": p50, "p99_ms": p99}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each kind of query runs")
    parser.add_argument("--db", type=Path, help="a library this benchmark built before (made if missing)")
    args = parser.parse_args()

    bundle = read_bundle(default_bundle_path(), check_encoders=False)
    with tempfile.TemporaryDirectory(prefix="ulip2-bench-serve-") as scratch:
        db = args.db or Path(scratch) / "library.sqlite"
        if not db.is_file():
            build(db, args.assets, bundle)
        with Library(db, read_only=True) as library:
            ids = sorted(library.embedded_ids(bundle_id(bundle)))
        rng = random.Random(0)
        like_ids = [rng.choice(ids) for _ in range(2000)]
        # Texts no cache has seen: this run's own words, each sent once (both sets far larger
        # than the queries a run makes), so every text query runs the tower.
        run = f"{random.SystemRandom().getrandbits(32):08x}"
        phrases = [f"a {style} {prompt_name(label)} ({run})" for label in load_vocabulary("lvis")[1]
                   for style in STYLES]
        rng.shuffle(phrases)
        local_phrases, phrases = phrases[:400], phrases[400:]

        baseline = in_process(db, bundle, like_ids, local_phrases, 200)
        # The server in a process of its own, as a studio runs it: the clients here do not
        # share its interpreter (nor its lock).
        started = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--db", str(db), "--port", "0", "--quiet"],
                                  cwd=BENCH.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline()
            if not line.startswith("serving "):
                raise SystemExit(f"the server did not start: {line}{server.stderr.read()[-2000:]}")
            port = int(urllib.parse.urlsplit(line.split(" at ")[1].split()[0]).port)
            # Every reader thread builds its Searcher (embeddings, ANN index) on its first query.
            load(port, [f"/v1/like/{i}?k=10" for i in like_ids[:8]], 4, 1.0)
            warm_s = time.perf_counter() - started
            like = load(port, [f"/v1/like/{i}?k=10" for i in like_ids], args.clients, args.seconds)
            text = load(port, [f"/v1/search?{urllib.parse.urlencode({'q': p, 'k': 10})}" for p in phrases],
                        args.clients, args.seconds)
            rss_mb = resident_mb(server.pid)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)

    print(f"{'':8} {'served qps':>10} {'p50 ms':>8} {'p99 ms':>8} | {'in-process qps':>14} {'p50 ms':>8} {'p99 ms':>8}")
    for name, served in (("like", like), ("text", text)):
        local = baseline[name]
        print(f"{name:8} {served['qps']:>10} {served['p50_ms']:>8} {served['p99_ms']:>8} | "
              f"{local['qps']:>14} {local['p50_ms']:>8} {local['p99_ms']:>8}")
    print(json.dumps({
        "assets": len(ids), "clients": args.clients, "seconds_per_kind": args.seconds, "server_warm_s": round(warm_s, 1),
        "like_qps": like["qps"], "like_p50_ms": like["p50_ms"], "like_p99_ms": like["p99_ms"],
        "text_qps": text["qps"], "text_p50_ms": text["p50_ms"], "text_p99_ms": text["p99_ms"],
        "inprocess_like_qps": baseline["like"]["qps"], "inprocess_like_p50_ms": baseline["like"]["p50_ms"],
        "inprocess_text_qps": baseline["text"]["qps"], "inprocess_text_p50_ms": baseline["text"]["p50_ms"],
        "server_rss_mb": rss_mb, "failures": like["failures"] + text["failures"], "first_failure": like["first_failure"] or text["first_failure"],
    }))


if __name__ == "__main__":
    main()
