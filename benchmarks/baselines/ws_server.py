"""The bare ``websockets`` baseline of W4/W6: what one idle WebSocket costs with no framework.

A ``websockets`` asyncio server on ``--port`` that says ``ready`` to each client (the
load generator's ``plain`` dialect) and then holds the connection until the client
closes it. No Django, no Redis, no STOMP: the floor under any ASGI node's memory per
connection.
"""

from __future__ import annotations

import argparse
import asyncio

from websockets.asyncio.server import ServerConnection, serve


async def handler(ws: ServerConnection) -> None:
    await ws.send("ready")
    await ws.wait_closed()


async def amain(port: int) -> None:
    async with serve(
        handler, "127.0.0.1", port, ping_interval=None, compression=None, backlog=2048
    ) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(amain(parser.parse_args().port))


if __name__ == "__main__":
    main()
