"""A new text query from the command line, end to end: `ulip2 search "<text>"` in a fresh
process, the text not yet in the text cache, beside the torch path in the same run.

    python bench/text_query.py [--repeats 5]

Indexes examples/ into a temporary library and points the cache at a temporary folder;
the first search builds the shipped default's text tower into it (tower_build_s), then
every search runs through onnxruntime + tokenizers (new_query_cold_s, the median of
--repeats fresh processes, each with a text never asked before). The baseline embeds the
same kind of new text in a fresh process through the torch space (transformers' minilm):
what every new query cost before the text tower was cached. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ULIP2 = [sys.executable, "-m", "cli"]
TORCH_QUERY = ("import sys; from core.spaces import load_space; "
               "load_space('minilm').embed_text([sys.argv[1]])")


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    values = sorted(values)
    return round(values[len(values) // 2], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, ULIP2_CACHE_DIR=str(Path(tmp) / "cache"), ULIP2_DB=str(Path(tmp) / "library.sqlite"))
        subprocess.run([*ULIP2, "index", str(ROOT / "examples")], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=600)
        tower_build_s = timed([*ULIP2, "search", "a first query, which builds the tower"], env)
        onnx, torch = [], []
        for i in range(args.repeats):  # interleaved, so both see the same machine
            onnx.append(timed([*ULIP2, "search", f"a wooden garden bench, variant {time.time_ns()} {i}"], env))
            torch.append(timed([sys.executable, "-c", TORCH_QUERY, f"a stone well, variant {time.time_ns()} {i}"], env))
    result = {"new_query_cold_s": median(onnx), "torch_new_query_cold_s": median(torch),
              "speedup": round(median(torch) / median(onnx), 1), "tower_build_s": round(tower_build_s, 2),
              "repeats": args.repeats}
    print(f"new text query, fresh process: {result['new_query_cold_s']} s (ONNX tower) vs "
          f"{result['torch_new_query_cold_s']} s (torch space, text embedding alone)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
