"""A TCP proxy on 127.0.0.1 in front of one server, which can cut its connections: the outage of
a server the caller does not own (the shared PostgreSQL and Redis of the tests, or DATABASE_URL /
REDIS_URL's in `make chaos`), without stopping it. chaos/services.py and tests/doubles/tcp_proxy.py
run it as a child.

    python -m chaos.proxy --target HOST:PORT | --target /path/to/unix.socket
                          [--port N] [--max-seconds S]

It prints "listening on 127.0.0.1:PORT", then reads commands on stdin, one a line, answering
"ok <command> <connections accepted so far>":
  down   reset every connection through it and stop listening (clients get ECONNREFUSED)
  up     listen again on the same port
  count  only answer
It exits when stdin closes (its caller died), after --max-seconds, or on SIGTERM.
"""

import argparse
import asyncio
import contextlib
import sys


class Proxy:
    def __init__(self, target: str, port: int = 0) -> None:
        self.target = target
        self.port = port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    async def _open_upstream(self):
        if self.target.startswith("/"):
            return await asyncio.open_unix_connection(self.target)
        host, _, port = self.target.rpartition(":")
        return await asyncio.open_connection(host, int(port))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        # One side ended: end the other at once, as a server's close would.
        writer.transport.abort()

    async def _serve(self, client_reader, client_writer) -> None:
        self.accepted += 1
        try:
            upstream_reader, upstream_writer = await self._open_upstream()
        except OSError:
            client_writer.transport.abort()
            return
        pair = {client_writer, upstream_writer}
        self.writers |= pair
        try:
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer),
                self._pipe(upstream_reader, client_writer),
            )
        finally:
            for writer in pair:
                writer.transport.abort()
            self.writers -= pair

    async def up(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            # abort(): a reset, as when the server's process dies; nothing more is sent.
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self.writers.clear()


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos.proxy")
    parser.add_argument("--target", required=True, help="HOST:PORT or a Unix socket's path")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    proxy = Proxy(args.target, args.port)
    await proxy.up()
    print(f"listening on 127.0.0.1:{proxy.port}", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    deadline = None if args.max_seconds is None else loop.time() + args.max_seconds
    while True:
        timeout = None if deadline is None else max(deadline - loop.time(), 0.01)
        try:
            line = await asyncio.wait_for(stdin.readline(), timeout)
        except TimeoutError:
            break
        if not line:
            break  # stdin closed: the caller is gone
        command = line.decode().strip()
        if command == "down":
            await proxy.down()
        elif command == "up":
            await proxy.up()
        elif command != "count":
            print(f"unknown command {command!r}", flush=True)
            continue
        print(f"ok {command} {proxy.accepted}", flush=True)
    await proxy.down()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1:]))
