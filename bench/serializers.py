"""Data passing throughput: save+load of the step runtime's serializers vs the disk's raw limit.

Measures, in one process and on one disk:

- a 1 GiB float64 array and a 1 M-row mixed-type DataFrame;
- ``save_value`` + ``load_value`` (serialize, digest, write; read, deserialize);
- the same number of raw bytes written then read back (``write``/``readinto``), the limit;
- ``dill.dump`` + ``dill.load`` (Kale's default marshaller), if dill is installed;
- the digest candidates (sha256, blake2b, blake3 if installed) on the array's bytes.

Prints times and the ratios ``raw / ours`` (throughput as a fraction of the raw disk; goal
≥ 0.5) and ``dill / ours`` (>1: faster than dill).

Usage: ``python bench/serializers.py [--dir DIR] [--gib 1.0] [--rows 1000000] [--repeat 3]``
(DIR must be on a real disk, not tmpfs; default: a temporary folder in the repository).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jupyter_pipeline.runtime.serializers import load_value, save_value


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        # Start clean: without this, the previous case's dirty pages get flushed (and
        # throttle writes) inside whichever case runs next.
        os.sync()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def raw_roundtrip(path: Path, nbytes: int) -> Callable[[], None]:
    data = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)

    def run() -> None:
        with open(path, "wb") as f:
            f.write(memoryview(data))
        back = np.empty_like(data)  # a fresh buffer, as loading a value makes a new object
        with open(path, "rb") as f:
            f.readinto(memoryview(back))
        path.unlink()

    return run


def ours_roundtrip(value: object, directory: Path) -> Callable[[], None]:
    def run() -> None:
        save_value(value, str(directory), "v")
        load_value(str(directory))
        shutil.rmtree(directory)

    return run


def dill_roundtrip(value: object, path: Path) -> Callable[[], None] | None:
    try:
        import dill
    except ImportError:
        return None

    def run() -> None:
        with open(path, "wb") as f:
            dill.dump(value, f)
        with open(path, "rb") as f:
            dill.load(f)
        path.unlink()

    return run


def mixed_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "x": rng.random(rows),
            "y": rng.normal(size=rows).astype(np.float32),
            "flag": rng.random(rows) > 0.5,
            "name": pd.Series([f"user-{i % 5000}" for i in range(rows)], dtype="str"),
            "city": pd.Categorical(rng.choice(["paris", "lima", "oslo", "pune"], rows)),
            "when": pd.date_range("2020-01-01", periods=rows, freq="s"),
        }
    )


def bench(label: str, value: object, nbytes: int, work: Path, repeat: int) -> None:
    meta = save_value(value, str(work / "probe"), "v")
    shutil.rmtree(work / "probe")
    cases = {
        "raw": raw_roundtrip(work / "raw.bin", nbytes),
        "ours": ours_roundtrip(value, work / "ours"),
    }
    dill_fn = dill_roundtrip(value, work / "value.dill")
    if dill_fn is not None:
        cases["dill"] = dill_fn
    # Interleaved rounds, median of each: the page cache's writeback makes single runs noisy.
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            times[name].append(timed(fn, 1))
    raw = statistics.median(times["raw"])
    ours = statistics.median(times["ours"])
    dill_t = statistics.median(times["dill"]) if "dill" in times else None
    print(
        f"\n{label}: {nbytes / 2**20:.0f} MiB in memory, saved as {meta['serializer']} "
        f"({meta['size'] / 2**20:.0f} MiB)"
    )
    print(f"  raw write+read      {raw:7.2f} s  ({nbytes / raw / 2**20:6.0f} MiB/s)")
    print(f"  save+load (ours)    {ours:7.2f} s  ({nbytes / ours / 2**20:6.0f} MiB/s)")
    if dill_t is not None:
        print(f"  dill dump+load      {dill_t:7.2f} s  ({nbytes / dill_t / 2**20:6.0f} MiB/s)")
    print(f"  ratio ours/raw throughput: {raw / ours:.2f}   (goal >= 0.5)")
    if dill_t is not None:
        print(f"  ratio ours/dill throughput: {dill_t / ours:.2f}   (>1: faster than dill)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="work folder on the disk to measure (not tmpfs)")
    parser.add_argument("--gib", type=float, default=1.0, help="array size in GiB")
    parser.add_argument("--rows", type=int, default=1_000_000, help="DataFrame rows")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    base = Path(args.dir) if args.dir else Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix=".bench-serializers-", dir=base))
    try:
        array = np.random.default_rng(0).random(int(args.gib * 2**30) // 8)
        mv = memoryview(array).cast("B")
        print(f"work dir: {work}")
        hashers = {"sha256": hashlib.sha256, "blake2b": hashlib.blake2b}
        try:
            from blake3 import blake3

            hashers["blake3"] = blake3
        except ImportError:
            pass
        for name, make in hashers.items():
            t = time.perf_counter()
            h = make()
            for i in range(0, len(mv), 1 << 26):
                h.update(mv[i : i + (1 << 26)])
            dt = time.perf_counter() - t
            print(f"digest {name:8s} {len(mv) / dt / 2**20:7.0f} MiB/s")
        bench(f"float64 array {args.gib:g} GiB", array, array.nbytes, work, args.repeat)
        del array, mv
        frame = mixed_frame(args.rows)
        nbytes = int(frame.memory_usage(deep=True).sum())
        bench(
            f"DataFrame {args.rows} rows x {frame.shape[1]} mixed columns",
            frame,
            nbytes,
            work,
            args.repeat,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
