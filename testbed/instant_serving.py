"""TensorFlow Serving's REST API answered at once, with one fixed predict answer: what the gateway
can carry on its own (``benchmarks/gateway.py``).

The stand-in (``testbed.tf_serving``) spends ~1 ms of Python a request, so in front of it the
gateway is never the bottleneck; the C++ server answers this pipeline's one-image requests in far
less. Here every ``POST …:predict`` gets the same body (given as a file: an answer the real model
gave) and every ``GET /v1/models/…`` says version 1 is AVAILABLE, on aiohttp's low-level server.

    python -m testbed.instant_serving --answer ANSWER.json   # prints the URL once listening
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from aiohttp import web

STATUS = {
    "model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
}


async def serve(answer: bytes) -> None:
    """Answer on a free port of 127.0.0.1 until SIGTERM; print where, once listening."""
    status = json.dumps(STATUS).encode()

    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        body = answer if request.method == "POST" else status
        return web.Response(body=body, content_type="application/json")

    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"instant_serving: listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m testbed.instant_serving", description=__doc__)
    parser.add_argument("--answer", type=Path, required=True, help="the predict answer's body")
    asyncio.run(serve(parser.parse_args(argv).answer.read_bytes()))


if __name__ == "__main__":
    main()
