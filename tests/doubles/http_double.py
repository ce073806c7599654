"""A real HTTP server on 127.0.0.1 that plays the AI provider and the CRM.

Run it:  python -m tests.doubles.http_double [--port 0] [--max-seconds 3600]
It prints "listening on http://127.0.0.1:PORT" first, then serves:

  POST /v1/chat/completions   OpenAI-compatible. The last user message holds JSON
                              {"domains": [...]}; the answer's message content is JSON
                              {"results": {domain: {industry, company_size, summary}}}.
  POST /crm/<anything>        a CRM webhook: records the call, answers {"accepted": N}.
  POST /_control              {"kind": "ai"|"crm", "path": optional, behaviour...}: how that
                              kind (or, with "path", only calls to that path, e.g. one tenant's
                              CRM) behaves from now on. Behaviour:
                                latency_ms      wait this long before answering
                                failure_rate    0..1, share of calls answered failure_status
                                failure_status  the status of a failure (503 by default)
                                fail_first      the first N calls (of the kind, or the path)
                                                fail with failure_status, the rest succeed
                                drip_ms         the whole reply, status line included, is sent
                                                one byte every drip_ms ms
                                body_bytes      a successful reply is padded to this many bytes
                                                (valid JSON, streamed)
                                refuse_emails   CRM: answer 422 when a lead of the call has
                                                one of these e-mails
                                reply_json      CRM: answer 200 with this JSON value
                                redirect_to     CRM: answer 302 with this Location (a
                                                client that follows it lands there)
                                omit_domains    AI: leave these domains out of the results
                                bad_domains     AI: give these domains a profile of bad types
  GET  /_requests?kind=crm[&path=/crm/x]
                              the calls recorded so far (path, headers, JSON body, raw body,
                              "at": when it arrived, time.time(), "status": what it was
                              answered).
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
        self.by_path: dict[str, dict] = {}  # path -> behaviour overriding its kind's
        self.counts: dict[str, int] = {}  # calls so far, by kind and by path (fail_first)
        self.calls: dict[str, list[dict]] = {"ai": [], "crm": []}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.behaviour = {
                kind: {"latency_ms": 0, "failure_rate": 0.0, "failure_status": 503}
                for kind in ("ai", "crm")
            }
            self.by_path = {}
            self.counts = {}
            self.calls = {"ai": [], "crm": []}

    def behaviour_for(self, kind: str, path: str) -> tuple[dict, int]:
        """The behaviour of a call to `path`, and how many calls came before it (to the path,
        if it has a behaviour of its own, else to the kind). Call with the lock held."""
        own = self.by_path.get(path)
        counter = path if own is not None else kind
        seen = self.counts.get(counter, 0)
        self.counts[counter] = seen + 1
        return {**self.behaviour[kind], **(own or {})}, seen

    def should_fail(self, behaviour: dict, seen: int) -> bool:
        if seen < behaviour.get("fail_first", 0):
            return True
        with self.lock:
            return self.random.random() < behaviour["failure_rate"]


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

        def _send(self, status: int, body: dict | list, behaviour: dict | None = None) -> None:
            behaviour = behaviour or {}
            if behaviour.get("body_bytes") and status == 200:
                return self._send_padded(body, behaviour["body_bytes"])
            raw = json.dumps(body).encode()
            if behaviour.get("drip_ms"):
                return self._drip(status, raw, behaviour["drip_ms"] / 1000)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _drip(self, status: int, raw: bytes, interval: float) -> None:
            # Byte by byte, the status line too: a per-read timeout never fires on this.
            head = (
                f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(raw)}\r\n\r\n"
            ).encode()
            whole = head + raw
            try:
                for index in range(len(whole)):
                    self.wfile.write(whole[index : index + 1])
                    time.sleep(interval)
            except OSError:  # the client gave up: what the test wants to see
                self.close_connection = True

        def _send_padded(self, body: dict, size: int) -> None:
            # Valid JSON of `size` bytes, streamed: {"accepted": N, "pad": "xxx..."}.
            head = json.dumps(body)[:-1].encode() + b', "pad": "'
            tail = b'"}'
            pad = max(size - len(head) - len(tail), 0)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(head) + pad + len(tail)))
            self.end_headers()
            chunk = b"x" * 65536
            try:
                self.wfile.write(head)
                while pad > 0:
                    self.wfile.write(chunk[:pad])
                    pad -= min(pad, len(chunk))
                self.wfile.write(tail)
            except OSError:  # the client stopped reading: the rest is not wanted
                self.close_connection = True

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/_requests":
                query = parse_qs(url.query)
                kind = query.get("kind", ["crm"])[0]
                path = query.get("path", [None])[0]
                with state.lock:
                    calls = [c for c in state.calls.get(kind, []) if path in (None, c["path"])]
                self._send(200, calls)
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
                path = update.pop("path", None)
                with state.lock:
                    target = state.by_path.setdefault(path, {}) if path else state.behaviour[kind]
                    target.update(update)
                    return self._send(200, dict(target))
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
            record = {
                "path": self.path,
                "headers": dict(self.headers),
                "body": body,
                "raw": raw.decode(errors="replace"),
                "at": time.time(),
            }
            with state.lock:
                behaviour, seen = state.behaviour_for(kind, self.path)
                state.calls[kind].append(record)
            if behaviour["latency_ms"]:
                time.sleep(behaviour["latency_ms"] / 1000)
            if state.should_fail(behaviour, seen):
                record["status"] = behaviour["failure_status"]
                return self._send(
                    behaviour["failure_status"], {"error": "injected failure"}, behaviour
                )
            record["status"] = 200
            self._record = record
            respond(body, behaviour)

        def _chat_completion(self, body: dict, behaviour: dict) -> None:
            messages = body.get("messages") or []
            user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
            try:
                domains = json.loads(user["content"])["domains"]
            except (TypeError, KeyError, ValueError):
                return self._send(400, {"error": "expected a user message with JSON domains"})
            omit = set(behaviour.get("omit_domains", ()))
            bad = set(behaviour.get("bad_domains", ()))
            results = {
                d: {"industry": 3, "company_size": None} if d in bad else company_profile(d)
                for d in domains
                if d not in omit
            }
            content = json.dumps({"results": results})
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
                behaviour,
            )

        def _crm(self, body, behaviour: dict) -> None:
            leads = body.get("leads", []) if isinstance(body, dict) else []
            refused = set(behaviour.get("refuse_emails", ()))
            if any(lead.get("email") in refused for lead in leads):
                return self._refuse(422, {"error": "a lead was refused"})
            if "redirect_to" in behaviour:
                return self._redirect(behaviour["redirect_to"])
            if "reply_json" in behaviour:
                return self._send(200, behaviour["reply_json"], behaviour)
            self._send(200, {"accepted": len(leads)}, behaviour)

        def _redirect(self, location: str) -> None:
            self._record["status"] = 302
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _refuse(self, status: int, body: dict) -> None:
            self._record["status"] = status
            self._send(status, body)

    return Handler


class DoubleServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client that hung up (a deadline, a capped read) is what the tests provoke.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    server = DoubleServer(("127.0.0.1", args.port), make_handler(DoubleState(args.seed)))
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    threading.Timer(args.max_seconds, server.shutdown).start()
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
