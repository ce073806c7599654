"""The COPY reference: psycopg 3 COPY of rows already stored, read back and written again into
the same table in the same batches (one transaction each). Shared by the writes scenario (pool
A's write path) and the pipeline scenario (inboxes to synced)."""

import time

import psycopg


class CopyReference:
    """A table's rows as they stand now, ready to be copied back in batches."""

    def __init__(self, conn: psycopg.Connection, table: str, columns: list[str]) -> None:
        self.conn = conn
        self.table = table
        self.columns = columns
        self.rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
        # By oid: psycopg dumps each value (dict to jsonb, UUID, datetime) as the column's type.
        oids = dict(
            conn.execute(
                "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %s::regclass",
                [table],
            ).fetchall()
        )
        self.types = [oids[column] for column in columns]
        conn.commit()

    def batches(self, sizes: list[int]) -> list[list[tuple]]:
        """The rows cut in batches of these sizes (the service's), in order."""
        found, start = [], 0
        for size in sizes:
            found.append(self.rows[start : start + size])
            start += size
        return found

    def truncate(self) -> None:
        table_truncate(self.conn, self.table)

    def copy(self, batch: list[tuple]) -> None:
        statement = f"COPY {self.table} ({', '.join(self.columns)}) FROM STDIN"
        with self.conn.transaction(), self.conn.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(self.types)
            for row in batch:
                copy.write_row(row)

    def timed(self, batches: list[list[tuple]]) -> list[float]:
        """COPY each batch into the (emptied) table; the seconds each took."""
        return batches_timed(batches, self.copy)


def table_truncate(conn: psycopg.Connection, table: str) -> None:
    conn.execute(f"TRUNCATE {table} CASCADE")
    conn.commit()


def batches_timed(batches, write) -> list[float]:
    timings = []
    for batch in batches:
        started = time.perf_counter()
        write(batch)
        timings.append(time.perf_counter() - started)
    return timings
