"""A batch's arguments as Flower and the logs show them: its size, not its leads."""

import json
import uuid

from kombu import Queue

from leadflow.celery import app
from leadflow.redis_conn import get_redis


def test_a_published_batch_shows_its_size_not_its_leads():
    queue = f"test.argsrepr.{uuid.uuid4().hex[:8]}"
    entries = [json.dumps({"email": f"ada{i}@acme.io", "name": "Ada"}) for i in range(3)]
    try:
        app.send_task("pool_a.qualify_leads", args=[entries, "normal", "b1"], queue=Queue(queue))
        message = json.loads(get_redis().lpop(queue))
    finally:
        get_redis().delete(queue)
    assert message["headers"]["argsrepr"] == "['<3 leads>', 'normal', 'b1']"
    assert "ada0@acme.io" not in json.dumps(message["headers"])
