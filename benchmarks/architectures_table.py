"""The tables of a sweep of ``benchmarks/architectures.py``: counts per library and every model that did not pass.

Reads the ``--json`` files of one or more runs (a sweep split with ``--chunk`` writes one per
slice; a model in several files counts once, its last row kept) and prints, per library:
models tried, built tiny, passed every step, passed with the ONNX check, ONNX "n/a" (the
dense model itself does not export, or its export differs from PyTorch), failed; then a
Markdown table of the failures (step and reason), the ONNX "n/a" rows and the skipped ones.

    python benchmarks/architectures_table.py arch-*.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def load_rows(paths: list[str]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for path in paths:
        for row in json.loads(Path(path).read_text()):
            rows[row["model"]] = row
    return rows


def cell(text: str, width: int = 200) -> str:
    return str(text).replace("|", "/").replace("\n", " ")[:width]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--skipped", action="store_true", help="also list every model skipped, with the reason")
    args = parser.parse_args()
    rows = load_rows(args.files)
    libraries = sorted({name.split("/")[0] for name in rows})
    print("| library | tried | built tiny | passed every step | of them ONNX checked | ONNX n/a | failed |")
    print("|---|---|---|---|---|---|---|")
    for lib in libraries:
        mine = [r for n, r in rows.items() if n.startswith(lib + "/")]
        built = [r for r in mine if r.get("build") == "ok"]
        passed = [r for r in built if r.get("result") == "pass"]
        onnx = Counter("ok" if r.get("onnx") == "ok" else "n/a" for r in passed)
        print(f"| {lib} | {len(mine)} | {len(built)} | {len(passed)} | {onnx['ok']} | {onnx['n/a']} | "
              f"{len(built) - len(passed)} |")
    failed = [r for r in rows.values() if r.get("build") == "ok" and r.get("result") != "pass"]
    print("\n| model | failed at | reason |\n|---|---|---|")
    for r in failed:
        result = r.get("result") or "stopped (no result)"
        step, _, reason = result.partition(": ")
        print(f"| {r['model']} | {cell(step.replace('FAIL at ', ''))} | {cell(reason)} |")
    print("\n| model | ONNX |\n|---|---|")
    for r in rows.values():
        if r.get("result") == "pass" and r.get("onnx") != "ok":
            print(f"| {r['model']} | {cell(r.get('onnx'))} |")
    readers = [r for r in rows.values() if r.get("read_by_parent") or r.get("read_without_example")]
    if readers:
        print("\n| model | left plain: read by parent (forward pass) | without example_input |\n|---|---|---|")
        for r in readers:
            print(f"| {r['model']} | {cell(', '.join(r.get('read_by_parent', [])))} | "
                  f"{cell(', '.join(r.get('read_without_example', [])) or 'same')} |")
    if args.skipped:
        print("\n| model | skipped |\n|---|---|")
        for r in rows.values():
            if r.get("build") != "ok":
                print(f"| {r['model']} | {cell(r.get('build'))} |")


if __name__ == "__main__":
    main()
