"""Trace ids are random version 4 UUIDs written as uuid.UUID writes them, never repeated."""

import uuid

from apps.intake.admission import trace_ids_new


def test_trace_ids_are_canonical_random_uuids():
    trace_ids = trace_ids_new(2000) + trace_ids_new(1)
    assert len(set(trace_ids)) == len(trace_ids)
    for trace_id in trace_ids:
        parsed = uuid.UUID(trace_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == trace_id


def test_no_trace_ids_for_no_leads():
    assert trace_ids_new(0) == []
