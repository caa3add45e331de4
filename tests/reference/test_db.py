from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Run in a fresh interpreter: forking pytest itself, with whatever threads
# earlier tests left, is the very hazard the guard is about.
FORK_WITH_A_HELD_CONNECTION = """
import os, sys, threading, time
from sqlalchemy import text
from reference.db import make_engine

url = sys.argv[1]
engine = make_engine(url, fork_safe=True)
with engine.begin() as connection:
    connection.execute(text("create table notes (body text)"))
held = engine.connect()
held.execute(text("select count(*) from notes"))
threading.Timer(0.5, held.close).start()

started = time.monotonic()
pid = os.fork()
if pid == 0:
    # A fresh engine in the child, as a cluster worker builds one.
    with make_engine(url).begin() as connection:
        connection.execute(text("insert into notes values ('from the child')"))
    os._exit(0)
waited = time.monotonic() - started
_, status = os.waitpid(pid, 0)
with engine.connect() as connection:
    body = connection.execute(text("select body from notes")).scalar_one()
print(f"{waited:.2f} {os.waitstatus_to_exitcode(status)} {body}")
"""


def test_fork_waits_for_open_sqlite_connections_and_the_child_can_write(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            FORK_WITH_A_HELD_CONNECTION,
            f"sqlite:///{tmp_path}/f.db",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    waited, child_exit, body = done.stdout.split(maxsplit=2)
    assert float(waited) >= 0.4  # the fork waited for the held connection
    assert child_exit == "0"
    assert body.strip() == "from the child"
