"""Process memory from /proc (Linux) for the benchmarks: current and peak resident set size, and a guard."""

import os
import threading
import time


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (kB there, e.g. ``VmRSS``, ``VmHWM``) in MB (10^6 bytes)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def reset_peak() -> bool:
    """Reset VmHWM to the current VmRSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def guard(limit_gb: float) -> None:
    """End the process (exit code 3) once its resident memory passes ``limit_gb``: the machine is shared."""
    def watch():
        while True:
            if status_mb("VmRSS") > 1000 * limit_gb:
                print(f"*** resident memory passed {limit_gb} GB: stopping", flush=True)
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()
