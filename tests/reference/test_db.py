from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from sqlalchemy import text

from reference.db import make_engine


def test_fork_waits_for_open_sqlite_connections_and_the_child_can_write(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/fork.db"
    engine = make_engine(url, fork_safe=True)
    with engine.begin() as connection:
        connection.execute(text("create table notes (body text)"))

    held = engine.connect()
    held.execute(text("select count(*) from notes"))
    releaser = threading.Timer(0.5, held.close)
    releaser.start()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        # A fresh engine in the child, as a cluster worker builds one.
        child = make_engine(url)
        with child.begin() as connection:
            connection.execute(text("insert into notes values ('from the child')"))
        os._exit(0)
    waited = time.monotonic() - started
    _, status = os.waitpid(pid, 0)
    releaser.join()

    assert waited >= 0.4  # the fork waited for the held connection
    assert os.waitstatus_to_exitcode(status) == 0
    with engine.connect() as connection:
        assert connection.execute(text("select body from notes")).scalar_one() == (
            "from the child"
        )
    engine.dispose()
