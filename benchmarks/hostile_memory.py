"""Peak memory of reading hostile or large inputs: a crafted model file, a gzip bomb, text folders.

Each case runs in a fresh subprocess that imports lorita, reads its resident size
(``VmRSS``), makes the one call, and reads the high-water mark (``VmHWM``, from
``/proc/self/status``); "extra" is the peak minus the resident size after the import.
The cases (built in a temporary folder):

- ``vit-892B``: an 892-byte ViT file whose description asks for ``image_size=4096``
  (its non-persistent position table: 4096^2 x 4 floats), read with ``lorita.load``;
- ``gzip-bomb``: a 1 MB gzip IDX image file, a (1, 28, 28) header followed by 1 GiB of
  zeros, read with ``lorita.data.idx.read_idx_images``;
- ``text-NN``: a folder of NN MB of text (copies of the Debian fortunes files), read with
  ``lorita.data.text.load_text_dataset``.

Run it against any source tree to compare versions (Linux):
    PYTHONPATH=src python benchmarks/hostile_memory.py
    PYTHONPATH=/path/to/older/checkout/src python benchmarks/hostile_memory.py --text-mb 19 40

Prints one line per case (the call's outcome: OK or the error's first words); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")

PROBE = r"""
import json, sys
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
import lorita
from lorita.data.idx import read_idx_images
from lorita.data.text import load_text_dataset
before = status("VmRSS")
call, arg = sys.argv[1], sys.argv[2]
try:
    {"load": lorita.load, "idx": read_idx_images, "text": load_text_dataset}[call](arg)
    outcome = "OK"
except Exception as err:
    outcome = f"{type(err).__name__}: {str(err)[:90]}"
print(json.dumps({"before_mb": before, "peak_mb": status("VmHWM"), "outcome": outcome}))
"""


def vit_file(folder: Path) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    import lorita
    from lorita.models import create_model

    path = folder / "vit.lorita"
    lorita.save(create_model("vit", num_classes=1, in_channels=1, image_size=4, patch_size=1, dim=4, depth=0,
                             heads=1), path)
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        desc = json.loads(f.metadata()["lorita"])
    desc["architecture"]["kwargs"]["image_size"] = 4096
    save_file(tensors, str(path), metadata={"lorita": json.dumps(desc)})
    return path


def gzip_bomb(folder: Path) -> Path:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(struct.pack(">IIII", 0x803, 1, 28, 28))]
    zeros = bytes(1 << 24)
    parts += [packer.compress(zeros) for _ in range(64)]  # 1 GiB
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"".join(parts) + packer.flush())
    return path


def text_folder(folder: Path, megabytes: int) -> Path:
    files = sorted(p for p in FORTUNES.iterdir()
                   if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8"))
    text = b"".join(p.read_bytes() for p in files).decode("utf-8", "replace").encode()
    out = folder / f"text{megabytes}"
    out.mkdir()
    written, i = 0, 0
    while written < megabytes << 20:
        (out / f"part{i:03d}.txt").write_bytes(text)
        written, i = written + len(text), i + 1
    return out


def measure(call: str, arg: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, call, str(arg)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-mb", type=int, nargs="*", default=[19, 40], help="text folder sizes (MB)")
    args = parser.parse_args()
    import lorita

    print(f"lorita from {Path(lorita.__file__).parent}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = [("vit-892B", "load", vit_file(folder)), ("gzip-bomb", "idx", gzip_bomb(folder))]
        cases += [(f"text-{mb}", "text", text_folder(folder, mb)) for mb in args.text_mb if FORTUNES.is_dir()]
        for name, call, path in cases:
            size = sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size
            row = measure(call, path)
            extra = row["peak_mb"] - row["before_mb"]
            print(f"{name:10s} input {size:>11,} bytes  after import {row['before_mb']:6.0f} MiB  "
                  f"peak {row['peak_mb']:6.0f} MiB  extra {extra:7.1f} MiB ({extra * 2**20 / size:6.1f}x the input)  "
                  f"{row['outcome']}")


if __name__ == "__main__":
    main()
