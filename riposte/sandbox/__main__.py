"""Run the sandbox: ``python -m riposte.sandbox --host 127.0.0.1 --port 4220``."""

from __future__ import annotations

import argparse
import os

import uvicorn

from riposte.sandbox.app import create_app
from riposte.sandbox.clock import utcnow
from riposte.sandbox.config import SandboxConfig
from riposte.sandbox.graph import load_alerts
from riposte.sandbox.samples import sample_graph_alerts

DEFAULT_PORT = 4220


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m riposte.sandbox",
        description="Serve the simulators of the external APIs on one loopback port.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("RIPOSTE_SANDBOX_PORT", DEFAULT_PORT))
    )
    parser.add_argument(
        "--load-samples", action="store_true", help="start with the four sample Graph alerts"
    )
    args = parser.parse_args(argv)
    app = create_app(SandboxConfig.from_env())
    if args.load_samples:
        load_alerts(app.state.sandbox, sample_graph_alerts(utcnow()))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
