"""Process memory from /proc (Linux) for the benchmarks: current and peak resident set size."""


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
