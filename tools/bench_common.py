"""Small pieces every benchmark tool in ``tools/`` needs: the CPU's name and a headless pyplot."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None where matplotlib (the bench extra)
    is not installed: benchmarks then skip their plots and keep their numbers."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
