"""Reading a live process's log file from a point on, as JSON lines (leadflow/logs.py)."""

import json


class LogTail:
    """The JSON lines a live process writes from now on."""

    def __init__(self, live_stack, name: str) -> None:
        self.process = live_stack.processes[name]
        self.start = len(self.process.log())

    def text(self) -> str:
        return self.process.log()[self.start :]

    def lines(self) -> list[dict]:
        found = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue  # a line being written
        return found

    def about(self, trace_id: str) -> list[dict]:
        return [
            line
            for line in self.lines()
            if line.get("trace_id") == trace_id or trace_id in line.get("trace_ids", ())
        ]
