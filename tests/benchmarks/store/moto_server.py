"""The DynamoDB endpoint of tests/benchmarks/store_proxy.py: moto's server, in its own process.

``proxy.store.embedded.start_moto_server`` (as ``shadowproxy demo`` uses it) on 127.0.0.1 and
the given port, until SIGTERM/SIGINT. A process of its own keeps moto's CPU use (and its GIL)
apart from the benchmark driver and measurable on its own.

    python moto_server.py --port P
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from proxy.store.embedded import start_moto_server


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server, url = start_moto_server("127.0.0.1", args.port)
    print(f"moto server at {url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
