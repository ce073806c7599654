"""Writes the secrets docker-compose.yml requires into an env file (`.env` by default), once.

    python deploy/compose_env.py [PATH]      (`make compose-env`)

A variable already in the file (or in the environment) is kept; the missing ones get random
values. The file is created mode 600. Every value is URL-safe, as REDIS_URL and DATABASE_URL
carry the passwords (and hex for those, as redis-server would read a leading "--" as an option).
"""

import os
import secrets
import sys
from pathlib import Path

# variable -> how its value is made
REQUIRED = {
    "DJANGO_SECRET_KEY": lambda: secrets.token_urlsafe(50),
    "POSTGRES_PASSWORD": lambda: secrets.token_hex(24),
    "REDIS_PASSWORD": lambda: secrets.token_hex(24),  # never "--…", an option to redis-server
    "FLOWER_BASIC_AUTH": lambda: f"leadflow:{secrets.token_urlsafe(18)}",
    "GRAFANA_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(18),
}


def compose_env_write(path: Path) -> list[str]:
    """Add the missing variables to `path`; return their names."""
    existing = path.read_text() if path.exists() else ""
    present = {line.split("=", 1)[0].strip() for line in existing.splitlines() if "=" in line}
    missing = [name for name in REQUIRED if name not in present and not os.environ.get(name)]
    if not missing:
        return []
    lines = [f"{name}={REQUIRED[name]()}" for name in missing]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as env_file:
        if existing and not existing.endswith("\n"):
            env_file.write("\n")
        env_file.write("\n".join(lines) + "\n")
    path.chmod(0o600)
    return missing


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / ".env"
    written = compose_env_write(path)
    if written:
        print(f"{path}: made {', '.join(written)} (keep this file out of version control)")
    else:
        print(f"{path}: every secret docker-compose.yml requires is already set")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
