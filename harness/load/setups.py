"""What serves the load: our server with cluster mode off or on, its peers
(gunicorn with uvicorn workers, `uvicorn --workers`) running the same app
with the same worker count, and instances with the content-api role.

A setup becomes a Topology of Instances, so starting, readiness, teardown
and the sweep for stray processes are the launcher's (harness.topology).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from harness.topology import Instance, free_port, reference_command

Kind = Literal["cluster-off", "cluster", "gunicorn", "uvicorn", "roles"]
PEERS = ("gunicorn", "uvicorn")
ASGI_APP = "reference.asgi:app"
CONTENT_API_ROLE = "content-api"
ROLE_ENV = "CLUSTERPROOF_SERVER__ROLE"


@dataclass(frozen=True)
class Setup:
    """One configuration of the server side of a load point.

    For kind "roles", workers is the number of content-api instances beside
    one full instance (0: the full instance alone), or -1 for a content-api
    instance alone.
    """

    kind: Kind
    workers: int = 1

    @property
    def label(self) -> str:
        if self.kind == "cluster-off":
            return "cluster-off"
        if self.kind == "roles":
            if self.workers < 0:
                return "content-api"
            return "full" if self.workers == 0 else f"full+{self.workers}-content-api"
        return f"{self.kind}-{self.workers}"

    # Limitation: the peers' processes only serve HTTP, so under the write
    # mix nobody delivers their webhooks, while our primary does deliver
    # them; the write-mix comparison is therefore tilted against us.
    @property
    def needs_schema(self) -> bool:
        """Peers, and a content-api instance alone, serve without migrating:
        the harness migrates first."""
        return self.kind in PEERS or (self.kind == "roles" and self.workers < 0)

    def instances(self, folder: Path, env: dict[str, str]) -> list[Instance]:
        if self.kind == "roles":
            return self._role_instances(folder, env)
        port = free_port()
        return [
            Instance(
                id=self.label,
                command=self._command(port),
                port=port,
                env={**env, **self._env()},
                workdir=folder / "server",
                log_path=folder / "server.log",
            )
        ]

    def _command(self, port: int) -> list[str]:
        where = ["127.0.0.1", str(port)]
        if self.kind == "gunicorn":
            return [
                sys.executable,
                "-m",
                "gunicorn",
                ASGI_APP,
                "--worker-class",
                "uvicorn.workers.UvicornWorker",
                "--workers",
                str(self.workers),
                "--bind",
                ":".join(where),
                "--log-level",
                "warning",
            ]
        if self.kind == "uvicorn":
            return [
                sys.executable,
                "-m",
                "uvicorn",
                ASGI_APP,
                "--host",
                where[0],
                "--port",
                where[1],
                "--workers",
                str(self.workers),
                "--no-access-log",
                "--log-level",
                "warning",
            ]
        return reference_command() + ["--port", str(port), "--instance-id", self.label]

    def _env(self) -> dict[str, str]:
        if self.kind != "cluster":
            return {}
        return {
            "CLUSTERPROOF_SERVER__CLUSTER__ENABLED": "true",
            "CLUSTERPROOF_SERVER__CLUSTER__WORKERS": str(self.workers),
        }

    def _role_instances(self, folder: Path, env: dict[str, str]) -> list[Instance]:
        roles = [CONTENT_API_ROLE] if self.workers < 0 else ["full"]
        roles += [CONTENT_API_ROLE] * max(self.workers, 0)
        instances = []
        for index, role in enumerate(roles):
            port = free_port()
            name = f"{role}-{index}"
            extra = {ROLE_ENV: role} if role == CONTENT_API_ROLE else {}
            instances.append(
                Instance(
                    id=name,
                    command=reference_command()
                    + ["--port", str(port), "--instance-id", name],
                    port=port,
                    env={**env, **extra},
                    workdir=folder / name,
                    log_path=folder / f"{name}.log",
                )
            )
        return instances

    def serving_pids(self, instances: list[Instance]) -> list[int]:
        """The processes expected to serve HTTP: the workers a multi-process
        server forked, or the single process of everything else."""
        # gunicorn forks even one worker; uvicorn serves in its own process
        # unless asked for more than one.
        forks = self.kind in ("cluster", "gunicorn") or (
            self.kind == "uvicorn" and self.workers > 1
        )
        pids: list[int] = []
        for instance in instances:
            if instance.pid is not None:
                pids += _workers(instance.pid) if forks else [instance.pid]
        return pids


def _workers(pid: int) -> list[int]:
    # The children of a multi-process server, minus multiprocessing's own
    # helper (uvicorn starts its workers with the spawn method, which may add
    # a resource tracker that serves nothing).
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    workers = []
    for child in children:
        try:
            if "resource_tracker" in " ".join(child.cmdline()):
                continue
        except psutil.Error:
            continue
        workers.append(child.pid)
    return workers
