"""A TCP proxy on 127.0.0.1 in front of one server, which a test takes down and brings back: an
outage of a shared server (the one PostgreSQL every engineer tests on) without stopping it.

    python -m tests.doubles.tcp_proxy --target 127.0.0.1:5432 [--max-seconds 3600]

prints "listening on 127.0.0.1:<port>", then reads one command a line on stdin and answers
"ok <command> <connections accepted so far>" on stdout:
    down   reset every proxied connection and stop listening: clients see a stopped server
           (connection refused)
    up     listen again on the same port
    count  only answer (how many connections clients have opened)
It exits when stdin closes (its test is gone) or after --max-seconds.
"""

import argparse
import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    async def up(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()  # a reset, as from a server that went away
        self.writers.clear()

    async def _handle(self, client_reader, client_writer) -> None:
        self.accepted += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        pair = {client_writer, server_writer}
        self.writers |= pair
        try:
            await asyncio.gather(
                self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer)
            )
        finally:
            for writer in pair:
                writer.transport.abort()
            self.writers -= pair

    @staticmethod
    async def _pipe(reader, writer) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


async def serve(target: str, max_seconds: float) -> None:
    host, port = target.rsplit(":", 1)
    proxy = Proxy(host, int(port))
    await proxy.up()
    print(f"listening on 127.0.0.1:{proxy.port}", flush=True)
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, None)  # the test is gone

    threading.Thread(target=read_stdin, daemon=True).start()
    deadline = loop.time() + max_seconds
    while True:
        try:
            command = await asyncio.wait_for(commands.get(), max(deadline - loop.time(), 0.01))
        except TimeoutError:
            return
        if command is None:
            return
        if command == "down":
            await proxy.down()
        elif command == "up":
            await proxy.up()
        print(f"ok {command} {proxy.accepted}", flush=True)


class TcpProxy:
    """The test's handle on a running proxy."""

    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process = process
        self.port = port

    def _command(self, command: str) -> int:
        self.process.stdin.write(f"{command}\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().split()
        if answer[:2] != ["ok", command]:
            raise RuntimeError(f"tcp proxy answered {answer!r} to {command!r}")
        return int(answer[2])

    def down(self) -> None:
        self._command("down")

    def up(self) -> None:
        self._command("up")

    def connections_accepted(self) -> int:
        return self._command("count")


@contextlib.contextmanager
def tcp_proxy(target: str, max_seconds: float = 3600.0) -> Iterator[TcpProxy]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.doubles.tcp_proxy", "--target", target]
        + ["--max-seconds", str(max_seconds)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"tcp proxy did not start: {line!r}")
        yield TcpProxy(process, int(line.rsplit(":", 1)[1]))
    finally:
        process.stdin.close()  # the proxy exits when its stdin closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port of the real server")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    asyncio.run(serve(args.target, args.max_seconds))


if __name__ == "__main__":
    main()
