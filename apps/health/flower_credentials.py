"""Flower's credentials for `make run`: made once, kept in var/flower_credentials (mode 600),
printed like the demo key. Flower refuses to start without credentials (flowerconfig.py).

    python -m apps.health.flower_credentials [PATH]

Prints a human line, then `user:password` alone on the last line (what FLOWER_BASIC_AUTH takes;
the Makefile passes the file's to honcho). FLOWER_BASIC_AUTH set in the environment wins: then
nothing is made or printed but a line saying so. No Django start-up.
"""

import os
import secrets
import sys
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "var" / "flower_credentials"
USER = "leadflow"


def credentials_ensure(path: Path) -> str:
    """The credentials kept in `path`, made (24 random characters of password) if missing."""
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if kept.partition(":")[2]:
        return kept
    path.parent.mkdir(parents=True, exist_ok=True)
    credentials = f"{USER}:{secrets.token_urlsafe(18)}"
    # Created 600 from the start (not chmod-ed after), so it is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as credentials_file:
        credentials_file.write(credentials + "\n")
    return credentials


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_PATH
    if os.environ.get("FLOWER_BASIC_AUTH"):
        print(
            "Flower http://127.0.0.1:5555/ asks for FLOWER_BASIC_AUTH, as set in your environment"
        )
        return 0
    credentials = credentials_ensure(path)
    print(f"Flower http://127.0.0.1:5555/ asks for these (user:password), kept in {path}:")
    print(credentials)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
