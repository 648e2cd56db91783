"""Fault injection for crash tests (test-only; production code only has named checkpoints).

`install()` hooks services.index.ingest.fault_point: with WENDAO_FAULT_PAUSE_S > 0 and the point
named by WENDAO_FAULT_AT (default rows_written, '*' for all), it prints "FAULT_POINT <name>" and
sleeps, so a test can kill -9 the process there. Run as a script, it installs the hook and runs the
CLI: `python tests/faults.py ingest --kb k file.txt`.
"""
import os
import sys
import time
from pathlib import Path


def install() -> None:
    from services.index import ingest

    def hook(name: str) -> None:
        pause = float(os.environ.get("WENDAO_FAULT_PAUSE_S", "0") or 0)
        if pause and os.environ.get("WENDAO_FAULT_AT", "rows_written") in (name, "*"):
            print(f"FAULT_POINT {name}", flush=True)
            time.sleep(pause)

    ingest.fault_point.hook = hook


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    install()
    from services.cli import main

    sys.exit(main(sys.argv[1:]))
