"""The parts of the chaos harness that decide a verdict, on their own: the proxy that makes an
outage of a shared server, and the search that tells a lead still waiting in Redis from a lost one.
"""

import socket
import subprocess
import threading
import uuid

import pytest
from kombu import Queue

from chaos.seams import trace_ids_in_redis
from chaos.services import Proxy
from leadflow.celery import app
from leadflow.redis_conn import get_redis


@pytest.fixture
def echo_server():
    """A TCP server on 127.0.0.1 that answers each line with the same line."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(1024):
            conn.sendall(data)


def _round_trip(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"ping\n")
        return sock.recv(16)


def _cut(sock: socket.socket) -> bool:
    """The peer closed or reset the connection."""
    try:
        return sock.recv(16) == b""
    except ConnectionResetError:
        return True


def test_proxy_cuts_connections_refuses_new_ones_and_comes_back(echo_server, tmp_path):
    proxy = Proxy(f"127.0.0.1:{echo_server}", tmp_path / "proxy.log")
    try:
        held = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        held.sendall(b"one\n")
        assert held.recv(16) == b"one\n"

        proxy.command("down")
        assert _cut(held)
        with pytest.raises(ConnectionRefusedError):
            _round_trip(proxy.port)

        proxy.command("up")
        assert _round_trip(proxy.port) == b"ping\n"
        held.close()
    finally:
        proxy.close()
    assert proxy.popen.returncode is not None


def test_trace_ids_waiting_in_redis_are_found_lost_ones_are_not():
    client = get_redis()
    in_inbox, in_queue, lost = (str(uuid.uuid4()) for _ in range(3))
    client.rpush("inbox:normal:chaos-test", f'{{"trace_id":"{in_inbox}"}}')
    # What admission keeps of every lead it accepts is not a place a lead waits for work.
    client.set(f"lf:trace:{lost}", b"{}", ex=60)
    # A Celery message keeps its arguments base64-encoded inside its JSON. On a queue of the
    # test's own: the live stack's pool C would take one sent to c.low before it is looked for.
    app.send_task("pool_c.sync_leads", args=[[in_queue], "normal"], queue=Queue("chaos-test.c"))
    try:
        found = trace_ids_in_redis(client, [in_inbox, in_queue, lost])
    finally:
        client.delete("inbox:normal:chaos-test", "chaos-test.c", f"lf:trace:{lost}")
    assert found == {in_inbox: "inbox:normal:chaos-test", in_queue: "chaos-test.c"}


def test_proxy_exits_when_the_harness_goes(echo_server, tmp_path):
    proxy = Proxy(f"127.0.0.1:{echo_server}", tmp_path / "proxy.log")
    proxy.popen.stdin.close()  # what the harness's death looks like to it
    try:
        proxy.popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proxy.popen.kill()
        pytest.fail("the proxy outlived its harness")
