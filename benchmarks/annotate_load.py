"""Load on the annotation server: submissions per second with N concurrent annotators, and submit latency.

    .venv/bin/python benchmarks/annotate_load.py [--annotators 20] [--seconds 20] [--pairs 3000] [--overlap 3]
                                                 [--diff] [--tokenizer DIR] [--db URL_OR_PATH | --postgres]

A fresh database (SQLite in a temporary folder unless --db; with --postgres, a throw-away PostgreSQL server
started like the tests start it: initdb in a temporary folder, 127.0.0.1, default settings, stopped at the
end) with synthetic pairs; `fgalign annotate serve`
runs as its own process (one uvicorn worker, as a team would run it); N threads, each an annotator with its
own httpx client and session, loop for --seconds: ask for the next item, (with --diff, ask for the live diff
once, as the page does while typing), submit an edit. Every submit is timed from request to the "saved"
answer, which the server sends after the transaction committed (SQLite WAL, synchronous=FULL).
Every loop is bounded by --seconds and by the number of items. Prints one JSON line: submissions/s,
p50/p95/max submit latency, the diff latency with --diff, and the machine's load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' server helpers: one way to start and drive it

from _annotate_server import Annotator, PostgresServer, add_users, server_process, write_pairs  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--diff", action="store_true", help="also call the live-diff endpoint once per item")
    ap.add_argument("--tokenizer", default=None, help="tokenizer directory for the token labels (with --diff)")
    ap.add_argument("--db", default=None, help="database path or SQLAlchemy URL (default: a temporary SQLite file)")
    ap.add_argument("--postgres", action="store_true", help="start a throw-away PostgreSQL server and use it")
    args = ap.parse_args()
    pg = PostgresServer() if args.postgres else None
    try:
        run(args, pg)
    finally:
        if pg is not None:
            pg.stop()


def run(args: argparse.Namespace, pg: PostgresServer | None) -> None:
    load_before = os.getloadavg()

    from fgalign.annotate.admin import init
    from fgalign.annotate.options import InitConfig

    with tempfile.TemporaryDirectory() as tmp:
        pairs = [{"prompt": f"List 3 things, case {i}:", "chosen": f" apple, pear, plum number {i}.",
                  "rejected": f" apple, stupid dog, plum number {i}."} for i in range(args.pairs)]
        db = pg.new_database() if pg else args.db or str(Path(tmp) / "annotations.db")
        init(InitConfig(pairs=str(write_pairs(Path(tmp) / "pairs.jsonl", pairs)), db=db, overlap=args.overlap,
                        tokenizer=args.tokenizer))
        names = [f"ann{i:02d}" for i in range(args.annotators)]
        tokens = add_users(db, names)
        submit_ms: list[float] = []
        diff_ms: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        with server_process(db) as (base, _proc):
            annotators = [Annotator(base, tokens[n], timeout=60) for n in names]
            start_gate = threading.Barrier(len(annotators) + 1)
            stop_at: list[float] = []

            def work(a: Annotator) -> None:
                start_gate.wait()
                for _ in range(args.pairs + 1):  # bounded: each annotator gets each item at most once
                    if time.perf_counter() >= stop_at[0]:
                        return
                    nxt = a.next()
                    if nxt["assignment"] is None:
                        return
                    aid, text = nxt["assignment"], nxt["original"].replace(" stupid dog,", " pear,")
                    if args.diff:
                        t0 = time.perf_counter()
                        r = a.post(f"/api/item/{aid}/diff", {"text": text})
                        with lock:
                            diff_ms.append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    r = a.submit(aid, text, seconds=5.0)
                    elapsed = (time.perf_counter() - t0) * 1000
                    with lock:
                        (submit_ms.append(elapsed) if r.status_code == 200 else errors.append(r.text[:200]))

            threads = [threading.Thread(target=work, args=(a,)) for a in annotators]
            for t in threads:
                t.start()
            stop_at.append(time.perf_counter() + args.seconds)
            t_start = time.perf_counter()
            start_gate.wait()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t_start
            for a in annotators:
                a.close()
    result = {
        "annotators": args.annotators, "seconds": round(wall, 1), "submissions": len(submit_ms),
        "errors": len(errors), "submissions_per_s": round(len(submit_ms) / wall, 1),
        "submit_ms": {"p50": round(statistics.median(submit_ms), 1) if submit_ms else None,
                      "p95": round(percentile(submit_ms, 0.95), 1), "max": round(max(submit_ms, default=0), 1)},
        "db": "postgresql (throw-away server, default settings)" if pg else
              "sqlite (WAL, synchronous=FULL)" if args.db is None else args.db.split("://")[0],
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "cpus": os.cpu_count(),
    }
    if args.diff:
        result["diff_ms"] = {"p50": round(statistics.median(diff_ms), 1), "p95": round(percentile(diff_ms, 0.95), 1),
                             "labels": "tokens" if args.tokenizer else "words"}
    if errors:
        result["first_error"] = errors[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
