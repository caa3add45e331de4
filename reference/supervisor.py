"""Cluster mode: a primary process that keeps forked HTTP workers alive.

The primary owns the listening socket, forks ``workers`` children that serve
HTTP on it, and runs the services that must exist once per instance (cron and
webhook delivery) through ``on_start`` and ``on_stop``. It respawns workers
that die, backs off when they keep dying at boot, and drains them on SIGTERM.

Signals the primary understands:

- SIGTERM, SIGINT: stop gracefully (a second SIGINT stops immediately).
- SIGHUP: stop gracefully, like SIGTERM (a closed terminal sends it). There
  is no reload on SIGHUP as in gunicorn; an ignored SIGHUP (nohup) stays
  ignored. Workers ignore SIGHUP: the primary drains them.
- SIGQUIT: stop immediately (workers get SIGKILL).
- SIGTTIN, SIGTTOU: one worker more, one worker fewer.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Any, NoReturn

from reference.cpus import available_cpus
from reference.exits import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_ORPHANED,
    EXIT_SERVICES_START,
    EXIT_WORKER_BOOT,
)

log = logging.getLogger(__name__)

MAX_WORKERS = 256

ReadyFn = Callable[[], None]
ServeFn = Callable[[socket.socket, int, ReadyFn], object]
StateFn = Callable[["ClusterState"], object]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

_SIGNAL_NAMES = {
    signal.SIGCHLD: "chld",
    signal.SIGTERM: "term",
    signal.SIGHUP: "hup",
    signal.SIGINT: "int",
    signal.SIGQUIT: "quit",
    signal.SIGTTIN: "ttin",
    signal.SIGTTOU: "ttou",
}


@dataclass(frozen=True)
class ClusterState:
    """What the primary publishes through ``on_change`` (for the admin API).

    ``workers`` maps worker number to pid for every live worker; ``ready``
    holds the numbers of those that reported ready. ``restarts`` counts
    workers spawned to replace one that died. ``started_at`` is wall-clock
    seconds since the epoch.
    """

    primary_pid: int
    workers: Mapping[int, int]
    ready: frozenset[int]
    restarts: int
    started_at: float
    stopping: bool

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy: ``{"primary_pid": 41, "workers": {"0": 42}, ...}``."""
        return {
            "primary_pid": self.primary_pid,
            "workers": {str(number): pid for number, pid in self.workers.items()},
            "ready": sorted(self.ready),
            "restarts": self.restarts,
            "started_at": self.started_at,
            "stopping": self.stopping,
        }


@dataclass
class WorkerProcess:
    """The primary's record of one forked worker."""

    number: int
    pid: int
    ready_fd: int  # read end of the readiness pipe, -1 once read or closed
    spawned_at: float  # monotonic
    ready_at: float | None = None  # monotonic
    booted: bool = False  # ready and alive for the whole boot window

    def __str__(self) -> str:
        return f"worker {self.number} (pid {self.pid})"


class PrimaryHalt(Exception):
    """Raised inside the primary to stop it; the reason travels with it."""

    def __init__(self, reason: str, exit_code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


@dataclass
class _Services:
    thread: threading.Thread | None = None
    started: bool = False

    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class Supervisor:
    """Forks and supervises the workers of one instance.

    ``serve(sock, number, ready)`` runs in each forked worker: it serves HTTP
    on the inherited ``sock``, calls ``ready()`` once it accepts requests,
    and returns when the worker should exit (on SIGTERM it must finish the
    requests in flight first). ``on_start()`` starts the primary's own
    services; ``on_stop(deadline)`` stops them, letting running executions
    finish until ``deadline`` (a ``time.monotonic()`` value). ``on_change``
    receives a ``ClusterState`` whenever workers change.

    ``workers=0`` means one worker per CPU this process may use.
    """

    def __init__(
        self,
        listener: socket.socket,
        workers: int,
        serve: ServeFn,
        *,
        on_start: Callable[[], object] | None = None,
        on_stop: Callable[[float], object] | None = None,
        on_change: StateFn | None = None,
        drain_timeout: float = 30.0,
        boot_window: float = 1.0,
        max_boot_failures: int = 5,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        tick: float = 1.0,
    ) -> None:
        if not isinstance(workers, int) or not 0 <= workers <= MAX_WORKERS:
            raise ValueError(
                f"workers must be a whole number from 0 to {MAX_WORKERS}, "
                f"got {workers!r}"
            )
        if drain_timeout < 0:
            raise ValueError(f"drain_timeout must be 0 or more, got {drain_timeout}")
        if max_boot_failures < 1:
            raise ValueError(
                f"max_boot_failures must be 1 or more, got {max_boot_failures}"
            )
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError(
                "backoff_initial must be above 0 and at most backoff_max, "
                f"got {backoff_initial} and {backoff_max}"
            )

        self.listener = listener
        self.worker_count = workers or available_cpus()
        self.serve = serve
        self.on_start = on_start
        self.on_stop = on_stop
        self.on_change = on_change
        self.drain_timeout = drain_timeout
        self.boot_window = boot_window
        self.max_boot_failures = max_boot_failures
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.tick = tick

        self.pid = os.getpid()
        self.started_at = 0.0
        self.restarts = 0
        self._workers: dict[int, WorkerProcess] = {}
        self._numbers_spawned: set[int] = set()
        self._retiring: set[int] = set()
        self._boot_failures = 0
        self._spawn_not_before = 0.0
        self._signals: SimpleQueue[int] = SimpleQueue()
        self._wakeup_r = self._wakeup_w = -1
        self._previous_handlers: dict[int, Any] = {}
        self._stop_requested: str | None = None  # "graceful" or "immediate"
        self._stopping = False
        self._services = _Services()

    # -- lifecycle -----------------------------------------------------------

    def run(self) -> int:
        """Start, supervise until a signal or a crash loop stops it, stop.

        Returns the exit code for the primary (``EXIT_OK``, ...).
        """
        try:
            self.start()
            while self._stop_requested is None:
                self._sleep(self._next_timeout())
                self._dispatch_signals()
                self.reap_workers()
                self.manage_workers()
        except PrimaryHalt as halt:
            log.critical("%s", halt.reason)
            return self.stop(graceful=True, exit_code=halt.exit_code)
        except Exception:
            log.exception("supervision failed, stopping")
            return self.stop(graceful=False, exit_code=EXIT_ERROR)
        return self.stop(graceful=self._stop_requested == "graceful")

    def start(self) -> None:
        """Install signal handlers, fork the workers, start the services."""
        self.pid = os.getpid()
        self.started_at = time.time()
        self._wakeup_r, self._wakeup_w = os.pipe()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.set_blocking(fd, False)
        self._install_signals()
        log.info(
            "starting %d workers on %s",
            self.worker_count,
            _address(self.listener),
        )

        # Fork the first workers before the services start their threads, so
        # at least this generation comes from a single-threaded process.
        self.spawn_workers()

        if self.on_start is not None:
            self._services.started = True
            try:
                self.on_start()
            except Exception as exc:
                log.exception("on_start raised")
                raise PrimaryHalt(
                    f"primary services failed to start ({exc!r}); giving up",
                    EXIT_SERVICES_START,
                ) from exc

    def stop(self, graceful: bool = True, exit_code: int = EXIT_OK) -> int:
        """Stop the workers and the services; return ``exit_code``.

        Graceful: close the primary's copy of the listening socket, SIGTERM
        the workers, stop the services, wait up to the drain timeout, then
        SIGKILL what is left. Immediate: SIGKILL at once. Nothing is
        respawned once this has begun.
        """
        self._stopping = True
        if self._stop_requested is None:
            self._stop_requested = "graceful" if graceful else "immediate"
        try:
            return self._stop(graceful, exit_code)
        finally:
            self._restore_signals()
            for fd in (self._wakeup_r, self._wakeup_w):
                if fd >= 0:
                    os.close(fd)
            self._wakeup_r = self._wakeup_w = -1

    def _stop(self, graceful: bool, exit_code: int) -> int:
        # The workers share this socket. Closing the primary's copy means the
        # port is released as soon as the last worker closes its own, which
        # uvicorn does first thing on SIGTERM.
        # Limitation: connections already queued on the socket but not yet
        # accepted when the last worker stops listening are reset; a proxy
        # in front has to retry them.
        self.listener.close()

        timeout = self.drain_timeout if graceful else 0.0
        deadline = time.monotonic() + timeout
        if graceful:
            log.info(
                "stopping gracefully, %d workers, drain timeout %.1f s",
                len(self._workers),
                timeout,
            )
        else:
            log.info("stopping immediately, killing %d workers", len(self._workers))
        self.kill_workers(signal.SIGTERM if graceful else signal.SIGKILL)
        self._stop_services(deadline)
        self._publish()

        while self._workers or self._services.running():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (graceful and self._stop_requested == "immediate"):
                break
            self._sleep(min(remaining, self.tick))
            self._dispatch_signals()
            self.reap_workers()

        if graceful:
            self._kill_stragglers()  # an immediate stop killed them above
        self._wait_workers()
        if self._services.running():
            if self._stop_requested == "immediate":
                log.warning("on_stop still running at the immediate stop; exiting")
            else:
                log.error(
                    "on_stop did not return within the drain timeout; "
                    "exiting without it"
                )
        log.info("stopped, exit code %d", exit_code)
        return exit_code

    # -- workers -------------------------------------------------------------

    def spawn_workers(self) -> None:
        """Fork a worker for every number that has none."""
        for number in self._missing_numbers():
            self.spawn_worker(number)

    def spawn_worker(self, number: int) -> WorkerProcess:
        """Fork worker ``number``; in the child this runs ``serve``.

        Must be called from the primary's main thread: the kernel sends the
        parent-death signal when the forking *thread* exits, not the process.
        """
        ready_r, ready_w = os.pipe()
        os.set_blocking(ready_r, False)

        # Block the handled signals across fork: a signal reaching the child
        # before it resets its handlers would run the primary's handler in
        # the child and be lost there (a SIGTERM sent right after a spawn
        # would leave the worker serving). Blocked, it stays pending until
        # the child has default handlers again.
        # Limitation: a primary running service threads forks a copy of
        # only the calling thread; locks other threads held stay held in the
        # child. logging and the stdlib re-create theirs after fork; serve
        # must not reuse objects the services share (dispose a database
        # pool before using it).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNAL_NAMES)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                self._run_worker(number, ready_w, mask)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(ready_w)

        worker = WorkerProcess(number, pid, ready_r, time.monotonic())
        self._workers[pid] = worker
        if number in self._numbers_spawned:
            self.restarts += 1
        self._numbers_spawned.add(number)
        log.info("%s booting", worker)
        self._publish()
        return worker

    def reap_workers(self) -> None:
        """Collect the exit status of every worker that has exited.

        Only our workers' pids are waited for, never any child: on_start
        services may run subprocesses that other code waits for.
        """
        changed = False
        try:
            for pid, worker in list(self._workers.items()):
                try:
                    wpid, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    wpid, status = pid, 0  # reaped by someone else
                if wpid == 0:
                    continue
                self._read_ready(worker)  # a report sent just before dying
                self._forget(worker)
                changed = True
                self._worker_exited(worker, os.waitstatus_to_exitcode(status))
        finally:
            if changed:
                self._publish()

    def manage_workers(self) -> None:
        """Spawn missing workers, retire surplus ones, clear boot failures."""
        if self._stopping:
            return
        now = time.monotonic()

        for worker in list(self._workers.values()):
            if worker.number >= self.worker_count and worker.pid not in self._retiring:
                log.info("retiring %s", worker)
                self._retiring.add(worker.pid)
                self.kill_worker(worker.pid, signal.SIGTERM)
            if (
                not worker.booted
                and worker.ready_at is not None
                and now - worker.ready_at >= self.boot_window
            ):
                worker.booted = True
                if self._boot_failures:
                    log.info(
                        "%s booted, clearing %d boot failures",
                        worker,
                        self._boot_failures,
                    )
                    self._boot_failures = 0

        missing = self._missing_numbers()
        if not missing:
            return
        if not self._boot_failures:
            for number in missing:
                self.spawn_worker(number)
            return

        # After a boot failure, boot one worker at a time after the backoff
        # delay, until one boots: a broken release then costs one fork per
        # backoff step instead of one per worker number.
        if not self._booting() and now >= self._spawn_not_before:
            self.spawn_worker(missing[0])

    def kill_workers(self, sig: int) -> None:
        """Send ``sig`` to every live worker."""
        for pid in list(self._workers):
            self.kill_worker(pid, sig)

    def kill_worker(self, pid: int, sig: int) -> None:
        """Send ``sig`` to one worker; a worker already gone is ignored."""
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # exited; the next reap collects it

    def state(self) -> ClusterState:
        """A snapshot of the primary and its workers."""
        workers = sorted(self._workers.values(), key=lambda w: w.number)
        return ClusterState(
            primary_pid=self.pid,
            workers={w.number: w.pid for w in workers},
            ready=frozenset(w.number for w in workers if w.ready_at is not None),
            restarts=self.restarts,
            started_at=self.started_at,
            stopping=self._stopping,
        )

    # -- signals -------------------------------------------------------------

    def handle_chld(self) -> None:
        self.reap_workers()

    def handle_term(self) -> None:
        self._stop_gracefully("SIGTERM")

    def handle_hup(self) -> None:
        # gunicorn's arbiter reloads on SIGHUP. We do not implement reloading
        # (the settings are read once, before the fork), and the default
        # action would kill the primary with no drain, so SIGHUP stops like
        # SIGTERM.
        self._stop_gracefully("SIGHUP")

    def handle_int(self) -> None:
        # Ctrl-C twice: the first drains, the second gives up on draining.
        if self._stopping:
            log.warning("SIGINT received again, stopping now")
            self._stop_requested = "immediate"
            return
        log.info("SIGINT received, stopping gracefully")
        self._stop_requested = "graceful"

    def handle_quit(self) -> None:
        log.warning("SIGQUIT received, stopping immediately")
        self._stop_requested = "immediate"

    def handle_ttin(self) -> None:
        if self._stopping or self.worker_count >= MAX_WORKERS:
            return
        self.worker_count += 1
        log.info("SIGTTIN, now %d workers", self.worker_count)

    def handle_ttou(self) -> None:
        if self._stopping or self.worker_count <= 1:
            return
        self.worker_count -= 1
        log.info("SIGTTOU, now %d workers", self.worker_count)

    def _stop_gracefully(self, name: str) -> None:
        if self._stopping:
            log.info("%s received, already stopping", name)
            return
        log.info("%s received, stopping gracefully", name)
        self._stop_requested = "graceful"

    def _on_signal(self, signum: int, frame: object) -> None:
        # A handler runs between any two bytecodes of the main loop, perhaps
        # while that loop holds a logging handler's lock or is half-way
        # through a write to a stream: logging or locking here can deadlock
        # or fail with a reentrant call. So the handler only queues the
        # signal (SimpleQueue.put is reentrant, made for this case) and wakes
        # the loop through the self-pipe; the loop does the work.
        self._signals.put(signum)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wakeup_w, b".")
        except OSError:
            pass  # pipe full (the loop is due to wake anyway) or closed

    def _install_signals(self) -> None:
        for signum in _SIGNAL_NAMES:
            if signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN:
                continue  # started under nohup: the hangup must not stop us
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signals(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _dispatch_signals(self) -> None:
        while True:
            try:
                signum = self._signals.get_nowait()
            except Empty:
                return
            getattr(self, "handle_" + _SIGNAL_NAMES[signal.Signals(signum)])()

    # -- the worker side -----------------------------------------------------

    def _run_worker(self, number: int, ready_w: int, mask: set[int]) -> NoReturn:
        # The child ends with os._exit: returning or raising would run the
        # primary's code up the stack (its loop, its atexit handlers, a test
        # runner) in the worker.
        code = EXIT_ERROR  # until serve returns or exits
        try:
            self._become_worker(mask)
            if os.getppid() != self.pid:
                # The primary died between fork and prctl, so the death
                # signal will never come.
                code = EXIT_ORPHANED
            else:
                self.serve(self.listener, number, _ReadyReport(ready_w))
                code = EXIT_OK
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_ERROR
        except BaseException:
            log.exception("serve raised in worker %d", number)
        finally:
            try:
                for handler in logging.getLogger().handlers:
                    handler.flush()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def _become_worker(self, mask: set[int]) -> None:
        for signum in _SIGNAL_NAMES:
            signal.signal(signum, signal.SIG_DFL)
        # A closed terminal sends SIGHUP to the whole process group. The
        # primary drains the workers on it; a worker that stopped on its own
        # could exit before the primary has seen its SIGHUP, and be
        # respawned. serve keeps an ignored SIGHUP ignored.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self._previous_handlers.clear()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.close(fd)
        for worker in self._workers.values():
            if worker.ready_fd >= 0:
                os.close(worker.ready_fd)
        self._workers = {}

        # Without this a primary killed by SIGKILL (or the OOM killer) leaves
        # orphaned workers holding the port. SIGTERM lets them drain.
        _set_parent_death_signal(signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    # -- helpers -------------------------------------------------------------

    def _worker_exited(self, worker: WorkerProcess, code: int) -> None:
        how = _describe_exit(code)
        if self._stopping or worker.pid in self._retiring:
            self._retiring.discard(worker.pid)
            expected = code in (0, -signal.SIGTERM)
            log.log(
                logging.INFO if expected else logging.WARNING,
                "%s exited with %s",
                worker,
                how,
            )
            return

        if self._is_boot_failure(worker, code):
            self._boot_failures += 1
            if self._boot_failures >= self.max_boot_failures:
                raise PrimaryHalt(
                    f"worker failed to boot {self._boot_failures} times in a row; "
                    f"last exit {how}; giving up",
                    EXIT_WORKER_BOOT,
                )
            delay = min(
                self.backoff_initial * 2 ** (self._boot_failures - 1),
                self.backoff_max,
            )
            self._spawn_not_before = time.monotonic() + delay
            log.error(
                "%s failed to boot, exited with %s "
                "(%d of %d failures in a row), respawning in %.3g s",
                worker,
                how,
                self._boot_failures,
                self.max_boot_failures,
                delay,
            )
            return

        # SIGKILL from nobody we know of is most likely the out-of-memory
        # killer; a worker that returns or raises has a bug. Either way the
        # worker had booted, so it is replaced at once.
        level = logging.WARNING if code <= 0 else logging.ERROR
        log.log(level, "%s exited with %s, respawning", worker, how)

    def _is_boot_failure(self, worker: WorkerProcess, code: int) -> bool:
        if worker.ready_at is None:
            return True
        # After the ready report only the worker's own exit counts: a signal
        # comes from outside (an operator, the OOM killer) and says nothing
        # about whether the release can boot.
        return code >= 0 and time.monotonic() - worker.ready_at < self.boot_window

    def _missing_numbers(self) -> list[int]:
        alive = {w.number for w in self._workers.values()}
        return [n for n in range(self.worker_count) if n not in alive]

    def _booting(self) -> bool:
        return any(w.ready_at is None for w in self._workers.values())

    def _forget(self, worker: WorkerProcess) -> None:
        del self._workers[worker.pid]
        if worker.ready_fd >= 0:
            os.close(worker.ready_fd)
            worker.ready_fd = -1

    def _kill_stragglers(self) -> None:
        # A drain ends early when an immediate stop (SIGQUIT, a second
        # SIGINT) comes during it; otherwise its deadline has passed.
        if self._stop_requested == "immediate":
            why = "still draining at the immediate stop"
        else:
            why = "still running at the drain deadline"
        for worker in list(self._workers.values()):
            log.warning("%s %s, killing it", worker, why)
            self.kill_worker(worker.pid, signal.SIGKILL)

    def _wait_workers(self) -> None:
        # Blocking: every worker left has been sent SIGKILL.
        for pid, worker in list(self._workers.items()):
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = 0
            self._forget(worker)
            self._worker_exited(worker, os.waitstatus_to_exitcode(status))
        self._publish()

    def _next_timeout(self) -> float:
        now = time.monotonic()
        timeout = self.tick
        if self._boot_failures and self._missing_numbers() and not self._booting():
            timeout = min(timeout, self._spawn_not_before - now)
        for worker in self._workers.values():
            if worker.ready_at is not None and not worker.booted:
                timeout = min(timeout, worker.ready_at + self.boot_window - now)
        return max(timeout, 0.0)

    def _sleep(self, timeout: float) -> None:
        """Wait for a signal, a ready report or the timeout."""
        poller = select.poll()
        poller.register(self._wakeup_r, select.POLLIN)
        by_fd = {}
        for worker in self._workers.values():
            if worker.ready_fd >= 0:
                poller.register(worker.ready_fd, select.POLLIN)
                by_fd[worker.ready_fd] = worker
        events = poller.poll(timeout * 1000)

        for fd, _ in events:
            if fd == self._wakeup_r:
                _drain(fd)
            elif fd in by_fd:
                self._read_ready(by_fd[fd])

    def _read_ready(self, worker: WorkerProcess) -> None:
        if worker.ready_fd < 0:
            return
        try:
            report = os.read(worker.ready_fd, 1)
        except BlockingIOError:
            return
        os.close(worker.ready_fd)
        worker.ready_fd = -1
        if not report:
            return  # closed without a report: the worker exited, reap says how

        worker.ready_at = time.monotonic()
        ready = sum(w.ready_at is not None for w in self._workers.values())
        log.info(
            "%s ready in %.2f s (%d of %d ready)",
            worker,
            worker.ready_at - worker.spawned_at,
            ready,
            self.worker_count,
        )
        self._publish()

    def _stop_services(self, deadline: float) -> None:
        if not self._services.started or self.on_stop is None:
            return
        on_stop = self.on_stop

        # In a thread, so the loop keeps reaping workers and can act on a
        # second signal while cron executions and deliveries finish.
        def stop_services() -> None:
            try:
                on_stop(deadline)
            except Exception:
                log.exception("on_stop raised")
            finally:
                self._wake()

        thread = threading.Thread(
            target=stop_services, name="primary-services-stop", daemon=True
        )
        self._services.thread = thread
        thread.start()

    def _publish(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(self.state())
        except Exception:
            log.exception("on_change raised")


class _ReadyReport:
    """The ``ready`` callable handed to serve: writes one byte, once."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __call__(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            os.write(fd, b"!")
        except OSError:
            pass  # the primary is gone; the death signal takes it from here
        finally:
            os.close(fd)


def _set_parent_death_signal(sig: int) -> None:
    # Limitation: prctl is Linux-only; elsewhere a primary killed by SIGKILL
    # leaves workers running until something else stops them.
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")


def _describe_exit(code: int) -> str:
    """``-9`` gives ``signal 9 (SIGKILL)``; ``1`` gives ``code 1``."""
    if code >= 0:
        return f"code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"
    return f"signal {-code} ({name})"


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 4096):
                return
        except BlockingIOError:
            return


def _address(sock: socket.socket) -> str:
    try:
        name = sock.getsockname()
    except OSError:
        return "a closed socket"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return str(name)


__all__ = [
    "ClusterState",
    "PrimaryHalt",
    "Supervisor",
    "WorkerProcess",
]
