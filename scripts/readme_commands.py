"""Run the README's command-line walk-through in order, in a fresh folder, and time each command.

The walk-through is the ```bash block that follows the line ``<!-- walkthrough -->`` in
README.md. Each line (a trailing backslash continues it) runs with ``bash -c`` in the work
folder, where ``experiments/`` links to the repository's; the ``lorita``, ``torchrun`` and
``python`` of this Python's environment come first on PATH. The first failing command stops
the run with its output. ``tests/test_readme.py`` runs it in the suite (marked slow).

    python scripts/readme_commands.py            # a temporary folder, removed afterwards
    python scripts/readme_commands.py --keep runs-walkthrough   # and every command's output in transcript.txt
    python scripts/readme_commands.py --print install           # another marked block's lines (CI runs them)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commands(readme: str, name: str = "walkthrough") -> list[str]:
    """The commands of the ```bash block after the line ``<!-- NAME -->``, continuation lines joined.

    Example:
        >>> commands("x\\n<!-- walkthrough -->\\n```bash\\nlorita a \\\\\\n  --b 1   # note\\nlorita c\\n```\\n")
        ['lorita a --b 1   # note', 'lorita c']
    """
    marker = f"<!-- {name} -->"
    if marker not in readme:
        raise ValueError(f"no line {marker} in the README")
    start = readme.index(marker)
    block = re.search(r"```bash\n(.*?)```", readme[start:], re.S)
    if block is None:
        raise ValueError(f"no ```bash block after {marker}")
    joined = re.sub(r"\\\n\s*", "", block.group(1))
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def run(workdir: Path, lines: list[str], log=print, transcript: Path | None = None) -> list[tuple[str, float]]:
    """Run each line in ``workdir``; returns (line, seconds); raises RuntimeError at the first failure.
    ``transcript``: a file that gets every command's output."""
    (workdir / "experiments").symlink_to(ROOT / "experiments")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    times = []
    for line in lines:
        tic = time.perf_counter()
        done = subprocess.run(["bash", "-c", line], cwd=workdir, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - tic
        if transcript is not None:
            with open(transcript, "a", encoding="utf-8") as out:
                out.write(f"$ {line}\n{done.stdout}{done.stderr}[exit {done.returncode}, {seconds:.1f} s]\n\n")
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-3000:]
            raise RuntimeError(f"README command failed (exit {done.returncode}): {line}\n{tail}")
        times.append((line, seconds))
        log(f"{seconds:6.1f} s  {line}")
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", help="run in this new folder and keep it (default: a temporary folder)")
    p.add_argument("--print", metavar="NAME", dest="show",
                   help="print the lines of the block marked <!-- NAME --> instead of running the walk-through")
    args = p.parse_args(argv)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if args.show:
        print("\n".join(commands(readme, args.show)))
        return 0
    lines = commands(readme)
    try:
        if args.keep:
            Path(args.keep).mkdir(parents=True)
            times = run(Path(args.keep).resolve(), lines, transcript=Path(args.keep).resolve() / "transcript.txt")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                times = run(Path(tmp), lines)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{len(times)} commands, {sum(s for _, s in times):.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
