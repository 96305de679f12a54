"""Conversation threads and the run log, in one SQLite file under `MMAGENT_HOME` (`threads.db`).

LangGraph's own SQLite checkpointer (`langgraph-checkpoint-sqlite`) keeps each thread's state —
messages with media by reference, never base64 — so `mmagent run --thread ID` (or `-c`, the last
thread) continues a conversation. Beside it, the table `mmagent_runs` logs every CLI run (prompt,
answer, pipeline, thread, media references, seconds), which `mmagent logs` lists like simonw/llm's
`llm logs`.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Settings, load_settings
from .errors import InputError

if TYPE_CHECKING:
    from .runner import RunResult

DB_NAME = "threads.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS mmagent_runs (
    id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    thread TEXT,
    pipeline TEXT NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,
    media TEXT NOT NULL,
    outputs TEXT NOT NULL,
    seconds REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS mmagent_runs_started ON mmagent_runs(started);
"""


def db_path(settings: Settings | None = None) -> Path:
    return (settings or load_settings()).home_path / DB_NAME


def new_thread_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@contextmanager
def open_checkpointer(settings: Settings | None = None) -> Iterator[Any]:
    """A LangGraph `SqliteSaver` on the threads database (created on first use)."""
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise InputError("threads need langgraph-checkpoint-sqlite (pip install langgraph-checkpoint-sqlite)") from exc
    path = db_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with SqliteSaver.from_conn_string(str(path)) as saver:
        yield saver


def _connect(settings: Settings | None) -> sqlite3.Connection:
    path = db_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30)
    conn.executescript(_SCHEMA)
    return conn


def record_run(result: RunResult, *, prompt: str, media: list[dict], settings: Settings | None = None) -> str:
    """Log one run; returns its id."""
    run_id = uuid.uuid4().hex[:12]
    outputs = [p.to_dict() for p in result.outputs]
    with _connect(settings) as conn:
        conn.execute("INSERT INTO mmagent_runs VALUES (?,?,?,?,?,?,?,?,?)",
                     (run_id, time.time(), result.thread, result.pipeline, prompt, result.answer,
                      json.dumps(media), json.dumps(outputs), round(result.seconds, 4)))
    return run_id


def recent_runs(limit: int = 10, *, thread: str | None = None, settings: Settings | None = None) -> list[dict]:
    """The latest runs, newest first (optionally of one thread)."""
    if not db_path(settings).exists():
        return []
    with _connect(settings) as conn:
        conn.row_factory = sqlite3.Row
        sql = "SELECT * FROM mmagent_runs" + (" WHERE thread = ?" if thread else "") + \
              " ORDER BY started DESC LIMIT ?"
        rows = conn.execute(sql, (thread, limit) if thread else (limit,)).fetchall()
    return [{**dict(r), "media": json.loads(r["media"]), "outputs": json.loads(r["outputs"])} for r in rows]


def threads(limit: int = 10, settings: Settings | None = None) -> list[dict]:
    """Threads with their number of runs and last activity, most recent first."""
    if not db_path(settings).exists():
        return []
    with _connect(settings) as conn:
        rows = conn.execute("SELECT thread, COUNT(*), MAX(started), MIN(started) FROM mmagent_runs "
                            "WHERE thread IS NOT NULL GROUP BY thread ORDER BY MAX(started) DESC LIMIT ?",
                            (limit,)).fetchall()
    return [{"thread": t, "runs": n, "last": last, "first": first} for t, n, last, first in rows]


def last_thread(settings: Settings | None = None) -> str | None:
    """The thread of the most recent run (what `-c` continues)."""
    found = threads(1, settings)
    return found[0]["thread"] if found else None


def checkpoint_bytes(thread: str, settings: Settings | None = None) -> int:
    """Bytes the checkpointer holds for `thread` (checkpoints and pending writes)."""
    path = db_path(settings)
    if not path.exists():
        return 0
    with sqlite3.connect(str(path)) as conn:
        total = 0
        for table, cols in (("checkpoints", "LENGTH(checkpoint) + LENGTH(metadata)"), ("writes", "LENGTH(value)")):
            try:
                total += conn.execute(f"SELECT COALESCE(SUM({cols}), 0) FROM {table} WHERE thread_id = ?",
                                      (thread,)).fetchone()[0]
            except sqlite3.OperationalError:
                pass
    return int(total)
