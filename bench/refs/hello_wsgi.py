"""Reference: plain WSGI, no framework. Reads the body and answers 202 with a little JSON."""

BODY = b'{"trace_id": "00000000-0000-0000-0000-000000000000", "status": "queued"}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("202 Accepted", HEADERS)
    return [BODY]
