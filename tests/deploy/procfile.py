"""The Procfile's processes, and how a command written for another runner is compared with them."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_ASSIGNMENT = re.compile(r"^(\w+)=(\S*)\s+")  # a leading VAR=value of a Procfile line
_KNOB = re.compile(r"\$\{(\w+):-[^}]*\}")  # sh / compose: ${VAR:-default}
_K8S_VAR = re.compile(r"\$\((\w+)\)")  # Kubernetes: $(VAR)
SUPERVISOR = "python leadflow/supervise.py -- "  # ahead of a command, under `make run`


def _procfile_lines() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, command = line.partition(":")
        entries[name.strip()] = command.strip()
    return entries


def procfile() -> dict[str, str]:
    """Process name -> command line, in the Procfile's order, without the VAR=value
    assignments ahead of it (compose and Kubernetes set those as the container's environment)
    and without the supervisor (`make run` only: their restart policies supervise there)."""
    entries = {}
    for name, command in _procfile_lines().items():
        while match := _ASSIGNMENT.match(command):
            command = command[match.end() :]
        entries[name] = command.removeprefix(SUPERVISOR)
    return entries


def procfile_supervised() -> dict[str, bool]:
    """Process name -> whether `make run` runs it under leadflow/supervise.py."""
    entries = {}
    for name, command in _procfile_lines().items():
        while match := _ASSIGNMENT.match(command):
            command = command[match.end() :]
        entries[name] = command.startswith(SUPERVISOR)
    return entries


def procfile_env() -> dict[str, dict[str, str]]:
    """Process name -> the VAR=value assignments ahead of its command."""
    entries = {}
    for name, command in _procfile_lines().items():
        env = {}
        while match := _ASSIGNMENT.match(command):
            env[match.group(1)] = match.group(2)
            command = command[match.end() :]
        entries[name] = env
    return entries


def command_shape(command: str | list[str]) -> list[str]:
    """argv with only what may differ between runners made equal: the listen address (loopback
    locally, all interfaces in a container) and the defaults of the ${VAR:-default} knobs."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    shaped = []
    for arg in argv:
        arg = _KNOB.sub(r"${\1}", arg)
        arg = _K8S_VAR.sub(r"${\1}", arg)
        arg = re.sub(r"^--address=[\d.]+$", "--address=HOST", arg)
        arg = re.sub(r"^[\d.]+:(\d+)$", r"HOST:\1", arg)
        shaped.append(arg)
    return shaped


def argv_with_defaults(command: str) -> list[str]:
    """argv as sh runs the Procfile line when no knob is set: ${VAR:-default} -> default."""
    return shlex.split(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", command))


def option_value(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    """argv with `option`'s value replaced (the option must be there)."""
    index = argv.index(option) + 1
    return [*argv[:index], value, *argv[index + 1 :]]
