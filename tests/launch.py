"""Start several real processes the way users do (`accelerate launch`), for the multi-process tests."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(processes: int = 2) -> list[str]:
    """The ``accelerate launch`` prefix for ``processes`` local processes on a free port."""
    return [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--multi_gpu",  # = several processes; the Accelerator picks CPU + gloo when there is no GPU
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]


def launch_env() -> dict[str, str]:
    """One thread per process (2 processes on 2 cores) and the repository importable."""
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
