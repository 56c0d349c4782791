"""`python -m emulator --host 127.0.0.1 --port 8400`: serve the seeded emulator with uvicorn."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from emulator.app import create_emulator_app
from emulator.core import Emulator
from emulator.seed import default_config


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument(
        "--issuer-base-url",
        default="https://login.microsoftonline.com",
        help="login host MSAL uses as authority (issuers are {this}/{tid}/v2.0)",
    )
    parser.add_argument(
        "--browser-base-url",
        default=None,
        help="where a browser reaches the pages (default http://HOST:PORT)",
    )
    parser.add_argument("--certfile", help="serve https with this PEM certificate (chain)")
    parser.add_argument("--keyfile", help="the PEM private key of --certfile")
    parser.add_argument("--consent-propagation-delay", type=float, default=0.0)
    parser.add_argument(
        "--enable-control-routes",
        action="store_true",
        help="serve POST /_emulator/... fault injection routes",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    config = default_config(
        issuer_base_url=args.issuer_base_url,
        browser_base_url=args.browser_base_url
        or f"{'https' if args.certfile else 'http'}://{args.host}:{args.port}",
        enable_control_routes=args.enable_control_routes,
        consent_propagation_delay=args.consent_propagation_delay,
    )
    uvicorn.run(
        create_emulator_app(Emulator(config)),
        host=args.host,
        port=args.port,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
    )


if __name__ == "__main__":
    main()
