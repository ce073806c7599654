"""A real HTTP server on 127.0.0.1 that plays the AI provider and the CRM.

Run it:  python -m tests.doubles.http_double [--port 0] [--max-seconds 3600]
It prints "listening on http://127.0.0.1:PORT" first, then serves:

  POST /v1/chat/completions   OpenAI-compatible. The last user message holds JSON
                              {"domains": [...]}; the answer's message content is JSON
                              {"results": {domain: {industry, company_size, summary}}}.
  POST /crm/<anything>        a CRM webhook: records the call, answers {"accepted": N}.
  POST /_control              {"kind": "ai"|"crm", "latency_ms": int, "failure_rate": 0..1,
                              "failure_status": int}: how that kind behaves from now on.
  GET  /_requests?kind=crm    the calls recorded so far (path, headers, JSON body).
  POST /_reset                forget recorded calls, behave normally again.

The server stops by itself after --max-seconds, so a forgotten one cannot linger.
"""

import argparse
import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

INDUSTRIES = ("software", "retail", "finance", "healthcare", "manufacturing", "media")
SIZES = ("1-10", "11-50", "51-200", "201-1000", "1000+")


class DoubleState:
    def __init__(self, seed: int) -> None:
        self.lock = threading.Lock()
        self.random = random.Random(seed)
        self.behaviour: dict[str, dict] = {}
        self.calls: dict[str, list[dict]] = {"ai": [], "crm": []}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.behaviour = {
                kind: {"latency_ms": 0, "failure_rate": 0.0, "failure_status": 503}
                for kind in ("ai", "crm")
            }
            self.calls = {"ai": [], "crm": []}

    def should_fail(self, kind: str) -> bool:
        with self.lock:
            return self.random.random() < self.behaviour[kind]["failure_rate"]


def company_profile(domain: str) -> dict:
    # Deterministic per domain, so tests can assert on it.
    digest = sum(domain.encode())
    return {
        "industry": INDUSTRIES[digest % len(INDUSTRIES)],
        "company_size": SIZES[digest % len(SIZES)],
        "summary": f"{domain} profile from the AI double",
    }


def make_handler(state: DoubleState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, body: dict | list) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/_requests":
                kind = parse_qs(url.query).get("kind", ["crm"])[0]
                with state.lock:
                    self._send(200, list(state.calls.get(kind, [])))
            elif url.path == "/_health":
                self._send(200, {"ok": True})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            path = urlparse(self.path).path
            raw = self._body()
            if path == "/_reset":
                state.reset()
                return self._send(200, {"ok": True})
            if path == "/_control":
                update = json.loads(raw or b"{}")
                kind = update.pop("kind")
                with state.lock:
                    state.behaviour[kind].update(update)
                return self._send(200, state.behaviour[kind])
            if path == "/v1/chat/completions":
                return self._serve("ai", raw, self._chat_completion)
            if path.startswith("/crm/"):
                return self._serve("crm", raw, self._crm)
            self._send(404, {"error": "not found"})

        def _serve(self, kind: str, raw: bytes, respond) -> None:
            try:
                body = json.loads(raw or b"null")
            except json.JSONDecodeError:
                return self._send(400, {"error": "body is not JSON"})
            with state.lock:
                behaviour = dict(state.behaviour[kind])
                state.calls[kind].append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                        "raw": raw.decode(errors="replace"),
                    }
                )
            if behaviour["latency_ms"]:
                time.sleep(behaviour["latency_ms"] / 1000)
            if state.should_fail(kind):
                return self._send(behaviour["failure_status"], {"error": "injected failure"})
            respond(body)

        def _chat_completion(self, body: dict) -> None:
            messages = body.get("messages") or []
            user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
            try:
                domains = json.loads(user["content"])["domains"]
            except (TypeError, KeyError, ValueError):
                return self._send(400, {"error": "expected a user message with JSON domains"})
            content = json.dumps({"results": {d: company_profile(d) for d in domains}})
            self._send(
                200,
                {
                    "id": "chatcmpl-double",
                    "object": "chat.completion",
                    "model": body.get("model", "double"),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": content},
                        }
                    ],
                },
            )

        def _crm(self, body) -> None:
            leads = body.get("leads", []) if isinstance(body, dict) else []
            self._send(200, {"accepted": len(leads)})

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(DoubleState(args.seed)))
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    threading.Timer(args.max_seconds, server.shutdown).start()
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
