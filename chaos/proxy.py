"""A TCP proxy on 127.0.0.1 that can cut its connections: the outage of a server the harness does
not own (DATABASE_URL / REDIS_URL given).

    python -m chaos.proxy --target HOST:PORT | --target /path/to/unix.socket

It prints "listening on PORT", then reads commands on stdin, one a line, answering "ok ...":
  down   close every connection through it and stop listening (clients get ECONNREFUSED)
  up     listen again on the same port
It exits when stdin closes (the harness died) or on SIGTERM.
"""

import argparse
import asyncio
import contextlib
import sys


class Proxy:
    def __init__(self, target: str, port: int) -> None:
        self.target = target
        self.port = port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def _open_upstream(self):
        if self.target.startswith("/"):
            return await asyncio.open_unix_connection(self.target)
        host, _, port = self.target.rpartition(":")
        return await asyncio.open_connection(host, int(port))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, client_reader, client_writer) -> None:
        try:
            upstream_reader, upstream_writer = await self._open_upstream()
        except OSError:
            client_writer.close()
            return
        self.writers |= {client_writer, upstream_writer}
        try:
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer),
                self._pipe(upstream_reader, client_writer),
            )
        finally:
            self.writers -= {client_writer, upstream_writer}

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
    parser.add_argument("--target", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    proxy = Proxy(args.target, args.port)
    await proxy.up()
    print(f"listening on {proxy.port}", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        command = line.decode().strip()
        if command == "down":
            await proxy.down()
        elif command == "up":
            await proxy.up()
        else:
            print(f"unknown command {command!r}", flush=True)
            continue
        print(f"ok {command}", flush=True)
    await proxy.down()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1:]))
