"""The journal's payload codec against pickle and json: ``python benchmarks/journal_codec.py``.

Rows are the benchmark's (``writebehind.tools.bench.workload.make_rows``: 9 columns, about 350
bytes) converted as ``PostgresUpsert.prepare`` converts them (the jsonb column to compact JSON text,
the timestamptz an aware datetime). Each way is timed over the same rows in the same run, the
best of ``--repeat`` passes; json is only a yardstick: it loses the types (a datetime comes back
a str), which the codec and pickle keep.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from writebehind.journal.codec import decode, encode
from writebehind.tools.bench.workload import COLUMNS, make_rows

_to_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def bench_params(count: int) -> list[tuple[Any, ...]]:
    """The bench rows as prepare() leaves them: values in column order, json as text."""
    rows = make_rows(count, seed=1, prefix="user-", updated=datetime.now(timezone.utc))
    params = []
    for row in rows:
        values = [row[name] for name in COLUMNS]
        values[-1] = _to_json(values[-1])
        params.append(tuple(values))
    return params


def best_of(repeat: int, run: Callable[[], object], count: int) -> float:
    """Microseconds per row, the best of ``repeat`` passes over ``count`` rows."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    options = parser.parse_args(argv)
    params = bench_params(options.rows)
    keys = [values[0] for values in params]
    pairs = list(zip(keys, params, strict=True))
    count = len(params)

    payloads = [encode(key, values) for key, values in pairs]
    pickles = [pickle.dumps((key, values), 5) for key, values in pairs]
    texts = [json.dumps([key, values], default=_json_default) for key, values in pairs]
    assert all(decode(p) == (k, v) for p, k, v in zip(payloads, keys, params, strict=True))

    results = [
        (
            "journal codec",
            best_of(options.repeat, lambda: [encode(k, v) for k, v in pairs], count),
            best_of(options.repeat, lambda: [decode(p) for p in payloads], count),
            sum(map(len, payloads)) / count,
        ),
        (
            "pickle (protocol 5)",
            best_of(
                options.repeat,
                lambda: [pickle.dumps((k, v), 5) for k, v in pairs],
                count,
            ),
            best_of(options.repeat, lambda: [pickle.loads(p) for p in pickles], count),
            sum(map(len, pickles)) / count,
        ),
        (
            "json (types lost)",
            best_of(
                options.repeat,
                lambda: [json.dumps([k, v], default=_json_default) for k, v in pairs],
                count,
            ),
            best_of(options.repeat, lambda: [json.loads(t) for t in texts], count),
            sum(len(t.encode()) for t in texts) / count,
        ),
    ]
    python = sys.version.split()[0]
    print(f"{count:,} rows of {len(COLUMNS)} columns, best of {options.repeat}; Python {python}")
    print(f"{'':20} {'encode µs/row':>14} {'decode µs/row':>14} {'bytes/row':>10}")
    for name, encode_us, decode_us, size in results:
        print(f"{name:20} {encode_us:14.2f} {decode_us:14.2f} {size:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
