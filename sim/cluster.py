"""ttforge's work as Dask tasks, on this machine or on the user's cluster.

``ttforge regress --jobs J`` and ``--cluster [ADDRESS]`` (and :func:`ttforge.sim.regress.regress`)
spread their cases over Dask ``distributed``, the engine the clusters of our users already run
(LSF, SLURM, PBS and SGE through ``dask-jobqueue``, Kubernetes through ``dask-kubernetes``):

* :class:`ClusterSpec` says where: a ``LocalCluster`` of ``workers`` processes on this
  machine (``address=None``), or a running scheduler named by its address
  (``tcp://host:port``) or by its scheduler file (``dask scheduler --scheduler-file F``);
* :func:`connect` starts the local cluster or connects to the scheduler and yields a
  ``distributed.Client`` (one-line errors: a bad address is a :class:`~ttforge.errors.ConfigError`,
  exit 2; a scheduler that cannot be reached, or that has no worker, a :class:`ClusterError`,
  exit 3);
* :func:`run_tasks` submits one task per item and hands each outcome to a callback as it
  finishes (in completion order). A worker that dies in the middle of a task is Dask's to
  handle: the scheduler reruns the task on another worker (or the restarted one), and the
  callback sees it once; a task that kills ``distributed.scheduler.allowed-failures + 1``
  workers (default 4) comes back as ``distributed.KilledWorker``. A scheduler that goes away
  raises :class:`SchedulerLost` (exit 3) after the outcomes that had arrived were handed on.

Nothing here is imported by ``import ttforge.sim``: ``distributed`` is imported when a
parallel run starts. Workers need the same ttforge (and simulators) as the client; a task
runs one case at a time per worker process (:func:`one_at_a_time`), so start workers with
``--nthreads 1`` and as many processes as cores (``dask worker ADDRESS --nworkers N
--nthreads 1``). See ``docs/verification.md``, "Regressions on a cluster".
"""

from __future__ import annotations

import ast
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ttforge._entry import interrupts_held
from ttforge.atomic import JOB_MARKER, job_dir
from ttforge.errors import ClusterError, ConfigError, SchedulerLost, show, show_path  # noqa: F401 - defined in ttforge.errors
from ttforge.limits import file_kind

__all__ = ["LOCAL", "SCHEMES", "ClusterSpec", "ClusterError", "SchedulerLost", "connect", "run_tasks",
           "one_at_a_time", "where", "probe"]

#: ``--cluster`` without an address (or with this word): a LocalCluster on this machine.
LOCAL = "local"
#: Address schemes of a running scheduler (anything else must be a scheduler file); the
#: ones that need Dask security settings or another process's memory (tls, wss, ucx,
#: inproc) are refused: ttforge passes none, and Dask failed on them only after 60 s.
SCHEMES = ("tcp://", "ws://")


def _not_a_file(p: Path) -> str | None:
    """What ``p`` is when it exists and is not a regular file (``"a FIFO"``, ...), else ``None``."""
    try:
        return file_kind(os.stat(p).st_mode)
    except OSError:
        return None


@dataclass(frozen=True)
class ClusterSpec:
    """Where tasks run.

    Attributes
    ----------
    address : str or None
        ``None``: a ``LocalCluster`` on this machine. Otherwise a scheduler address
        (``tcp://host:port``) or the path of a scheduler file.
    workers : int
        Worker processes of the local cluster (one thread each); ignored for an address.
    connect_timeout : float
        Seconds to reach a scheduler.
    worker_timeout : float
        Seconds a run waits with no worker at all (none joined, or all gone) before it
        stops with :class:`ClusterError`.
    """

    address: str | None = None
    workers: int = 1
    connect_timeout: float = 30.0
    worker_timeout: float = 120.0

    @classmethod
    def parse(cls, text: str | None, workers: int = 1, flag: str = "--cluster", **kw) -> "ClusterSpec":
        """``None`` or ``"local"``: a local cluster of ``workers``; ``tcp://host:port`` (or
        another scheme of :data:`SCHEMES`): that scheduler; else an existing scheduler file.
        Anything else is a one-line :class:`ConfigError` naming the flag."""
        if text is None or text == LOCAL:
            return cls(None, max(1, int(workers)), **kw)
        t = str(text)
        if t.startswith(SCHEMES):
            _check_address(t, flag)
            return cls(t, max(1, int(workers)), **kw)
        if "://" in t:
            raise ConfigError(f"{flag} {show(t)}: unknown scheme; use tcp://HOST:PORT (or "
                              f"{', '.join(s[:-3] for s in SCHEMES[1:])}), a scheduler file or nothing")
        p = Path(t).expanduser()
        kind = _not_a_file(p)
        if kind:
            # it exists: saying "not an existing file" of a FIFO or /dev/zero misleads
            raise ConfigError(f"{flag} {show_path(t)} is {kind}, not a scheduler file; give the "
                              f"file dask scheduler --scheduler-file FILE wrote, a scheduler address "
                              f"(tcp://HOST:PORT), or nothing for a local cluster")
        if not p.is_file():
            raise ConfigError(f"{flag} {show_path(t)}: neither a scheduler address (tcp://HOST:PORT) nor "
                              f"an existing scheduler file (dask scheduler --scheduler-file FILE); "
                              f"give one of them, or nothing for a local cluster")
        scheduler_file_address(p, flag)
        return cls(str(p), max(1, int(workers)), **kw)

    @property
    def is_local(self) -> bool:
        return self.address is None

    @property
    def is_file(self) -> bool:
        return self.address is not None and not self.address.startswith(SCHEMES)

    def describe(self) -> str:
        """``local cluster of 2 workers``, ``tcp://h:8786`` or ``scheduler file F``."""
        if self.is_local:
            return f"local cluster of {self.workers} worker{'s' if self.workers != 1 else ''}"
        return f"scheduler file {self.address}" if self.is_file else str(self.address)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Dask's own log lines (a lost connection logs tracebacks) stay out of the terminal:
    ttforge reports what went wrong in one line."""
    names = ("distributed", "distributed.client", "distributed.scheduler", "distributed.worker",
             "distributed.nanny", "distributed.core", "distributed.comm", "distributed.batched",
             "tornado", "asyncio")
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.CRITICAL + 1)
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def _check_address(address: str, flag: str = "--cluster") -> None:
    """A one-line :class:`ConfigError` unless ``address`` is ``SCHEME://HOST[:PORT]`` with
    a host and, if given, a port of 1..65535 (Dask took ``tcp://[::1`` or a scheduler
    file's nonsense as far as an assertion of its own, and its half-made client then
    held the process for 60 s on exit)."""
    import re
    from urllib.parse import urlsplit

    scheme = address.split("://", 1)[0]
    try:
        u = urlsplit(address)
        host = u.hostname or ""
        # a name or an address, nothing Dask would read as part of the port (a query, a
        # fragment or user:password@ went to its int() of the port: exit 70 after 60 s)
        ok = (bool(re.fullmatch(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?", host))
              and (u.port is None or 1 <= u.port <= 65535) and u.path in ("", "/")
              and not (u.query or u.fragment or u.username is not None or u.password is not None
                       or "?" in address or "#" in address))
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{flag} {show(address)}: not a scheduler address; give {scheme}://HOST:PORT "
                          f"(e.g. tcp://10.0.0.5:8786), a scheduler file or nothing (a local cluster)")


def scheduler_file_address(path: str | os.PathLike, flag: str = "--cluster") -> str:
    """The scheduler address a Dask scheduler file holds (a JSON object whose
    ``address`` is one), or a one-line :class:`ConfigError` naming the file."""
    import json

    p = Path(path)
    try:
        if p.stat().st_size > (1 << 20):
            raise ValueError("larger than 1 MiB")
        doc = json.loads(p.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError(f"{flag} {show_path(p)}: not a Dask scheduler file ({type(e).__name__}); give the "
                          f"file written by dask scheduler --scheduler-file FILE") from None
    address = doc.get("address") if isinstance(doc, dict) else None
    if not isinstance(address, str) or not address.startswith(SCHEMES):
        raise ConfigError(f"{flag} {show_path(p)}: not a Dask scheduler file (no scheduler address in it); "
                          f"give the file written by dask scheduler --scheduler-file FILE")
    _check_address(address, f"{flag} {show_path(p)}: its address")
    return address


def _import_distributed():
    try:
        import distributed
    except ImportError as e:  # a broken or partial install
        raise ClusterError(f"parallel runs need Dask's 'distributed' package, which cannot be imported "
                           f"({e}); install it with: pip install distributed") from None
    return distributed


def _wait_for_a_worker(client, spec: ClusterSpec) -> None:
    deadline = time.monotonic() + spec.worker_timeout
    while time.monotonic() < deadline:
        if client.nthreads():
            return
        time.sleep(0.2)
    raise ClusterError(f"--cluster {spec.describe()}: no worker joined the scheduler within "
                       f"{spec.worker_timeout:.0f} s; start workers with: dask worker "
                       f"{spec.address if not spec.is_file else '--scheduler-file ' + str(spec.address)} "
                       f"--nthreads 1")


#: The most a Dask scheduler's first message on a TCP connection (its handshake, a few
#: hundred bytes) may claim to hold.
_HANDSHAKE_BYTES = 1 << 16


def _probe_scheduler(address: str, spec: ClusterSpec) -> None:
    """A one-line :class:`ClusterError` unless the ``tcp://`` scheduler at ``address``
    answers like one within ``spec.connect_timeout``: its handshake, an 8-byte length of
    at most :data:`_HANDSHAKE_BYTES` and that many bytes. Dask reads any 8 bytes as that
    length (an HTTP server's ``HTTP/1.0`` claims 3.5 EB: a MemoryError) and waits
    without bound on a server that never answers, and its half-made client then holds
    the process for 60 s on exit."""
    import struct
    from urllib.parse import urlsplit

    if not address.startswith("tcp://"):
        return  # ws:// goes through tornado's HTTP client, which times out itself
    u = urlsplit(address)
    deadline = time.monotonic() + spec.connect_timeout
    where = f"--cluster {spec.describe()}"

    def read(sock: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    try:
        with socket.create_connection((u.hostname, u.port or 8786), timeout=spec.connect_timeout) as sock:
            (n,) = struct.unpack("<Q", read(sock, 8))
            if not 0 < n <= _HANDSHAKE_BYTES:
                raise ClusterError(f"{where}: what answers there is not a Dask scheduler (its first "
                                   f"message claims {n:,} bytes); check the address and port")
            read(sock, n)
    except TimeoutError:
        raise ClusterError(f"{where}: what listens there did not answer like a Dask scheduler within "
                           f"{spec.connect_timeout:g} s; check the address and port") from None
    except EOFError:
        raise ClusterError(f"{where}: what listens there closed the connection before a Dask scheduler's "
                           f"handshake; check the address and port") from None
    except OSError as e:
        raise ClusterError(f"{where}: cannot reach the scheduler ({type(e).__name__}: {e.strerror or e}); "
                           f"start it (dask scheduler) or check the address") from None


def _ttforge_version() -> str:
    from ttforge import __version__

    return __version__


def _check_workers(client, spec: ClusterSpec) -> None:
    """Every worker runs the command's ttforge version (tasks are ttforge functions)."""
    from ttforge import __version__

    try:
        seen = client.run(_ttforge_version)
    except Exception as e:  # noqa: BLE001 - e.g. the workers cannot import ttforge
        raise ClusterError(f"--cluster {spec.describe()}: the workers cannot run ttforge ({type(e).__name__}: "
                           f"{e}); install the same ttforge on every worker (pip install ttforge)") from None
    for worker, version in sorted(seen.items()):
        if version != __version__:
            raise ClusterError(f"--cluster {spec.describe()}: worker {worker} runs ttforge {version}, this "
                               f"command ttforge {__version__}; install the same version on every worker")


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """In the main thread, a ``TimeoutError`` raised into the block after ``seconds``
    (Dask's connection can wait without end on a server that accepted it and went
    silent, past its own timeout); elsewhere, nothing. The host's own ``ITIMER_REAL``
    and ``SIGALRM`` handler are put back afterwards, the timer with what was left of it
    (it was cancelled: a host's alarm never rang after a ``--cluster`` run); one that fell
    due meanwhile rings at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ring(signum, frame):
        raise TimeoutError(f"no answer within {seconds:g} s")

    old = signal.signal(signal.SIGALRM, ring)
    t0 = time.monotonic()
    host_left, host_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if host_left > 0:
            left = host_left - (time.monotonic() - t0)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), host_interval)


def _new_client(distributed, address: str, timeout: float):
    """``distributed.Client(address)`` within ``timeout`` (and a few seconds) that leaves
    nothing behind when it fails: Dask's half-made client (its ``__init__`` raised)
    would hold the process for 60 s on exit and print a traceback unless closed at
    once, so it is made in two steps to keep it."""
    client = distributed.Client.__new__(distributed.Client)
    try:
        with _alarm(timeout + 5):
            client.__init__(address, timeout=timeout, set_as_default=False)
    except BaseException:
        with contextlib.suppress(Exception):
            client.close(timeout=1)
        raise
    return client


def _start_local(distributed, spec: ClusterSpec, scratch: Path, mask: frozenset | None):
    """``distributed.LocalCluster`` for ``spec``, started in a thread of its own whose
    signal mask (``mask`` and SIGINT) every thread it starts inherits, and so the worker
    processes (a signal mask survives fork and exec; a nanny's restart of a worker comes
    from the same threads): a Ctrl-C at the terminal, sent to the whole process group,
    waits in a worker until :func:`dask_setup` takes it over, and this command closes the
    cluster. Unblocked, each worker printed a 30-line KeyboardInterrupt traceback
    ("Process Dask Worker process (from Nanny)") before the command's one line. SIGTERM
    stays theirs (the nanny ends a worker with it)."""
    kwargs = dict(n_workers=spec.workers, threads_per_worker=1, processes=True,
                  host="127.0.0.1", scheduler_port=0, dashboard_address="127.0.0.1:0",
                  silence_logs=logging.CRITICAL, local_directory=scratch,
                  preload=[__name__],   # dask_setup below, in every worker (and a restarted one)
                  # the scheduler's scratch too: local_directory is the workers'
                  # only, and the scheduler made $TMPDIR/dask-scratch-space/ (with
                  # its lock files) on every run and left it there
                  scheduler_kwargs={"local_directory": str(scratch)})
    if mask is None:
        return distributed.LocalCluster(**kwargs)
    box: dict[str, Any] = {}

    def start() -> None:
        # multiprocessing starts its resource tracker with the first process it spawns
        # and then unblocks SIGINT and SIGTERM in the spawning thread: started here
        # first, so that no Dask thread's mask is changed (the first worker took Ctrl-C)
        from multiprocessing import resource_tracker

        with contextlib.suppress(Exception):
            resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask | {signal.SIGINT})
        try:
            box["cluster"] = distributed.LocalCluster(**kwargs)
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            box["error"] = e

    t = threading.Thread(target=start, name="ttforge local cluster start", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["cluster"]


def _no_keyboard_interrupt(signum, frame) -> None:
    """A local worker's SIGINT handler: nothing (see :func:`dask_setup`)."""


def dask_setup(worker) -> None:
    """Run by Dask in each worker process of a local cluster (its ``preload``): Ctrl-C at
    the terminal reaches the worker (it is in the command's process group) and does
    nothing there: the command closes the cluster, which ends its workers. Its SIGINT,
    blocked since it started (:func:`_start_local`), is unblocked for the simulators it
    starts, which get the default action again (a handler does not survive exec; an
    ignored or blocked signal would), so a Ctrl-C still stops them at once (blocked, a
    simulator ran on after its worker had been ended)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _no_keyboard_interrupt)
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _remove_scratch(scratch: Path) -> None:
    """Remove the local cluster's scratch directory, its :data:`~ttforge.atomic.JOB_MARKER`
    last: if something still writes there (a worker the cluster could not end), the
    directory keeps its marker and the next run's :func:`~ttforge.atomic.job_dir` removes
    it (``rmtree`` took the marker first and left ``dask-scratch-space/`` for good)."""
    marker = scratch / JOB_MARKER
    try:
        kept = marker.read_bytes()
        entries = [e for e in os.scandir(scratch) if e.name != JOB_MARKER]
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)   # no marker: nothing to keep
        return
    for e in entries:
        with contextlib.suppress(OSError):
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.unlink(e.path)
    try:
        marker.unlink()
        scratch.rmdir()
    except OSError:
        with contextlib.suppress(OSError):
            marker.write_bytes(kept)   # written to meanwhile: left to the next run


class _DaskTraces:
    """What starting a local cluster changes in this process, put back once it is closed:
    the environment Dask's nannies set for the workers they spawn (``OMP_NUM_THREADS=1``
    and the rest of ``distributed.nanny.pre-spawn-environ``, ``PYTHONHASHSEED``,
    ``__DASK_PARENT_PID``) and the multiprocessing start method it fixed (``fork``): a
    host that went on to use NumPy's threads or ``multiprocessing`` after ``regress(jobs=2)``
    found them changed. A variable the host itself changed while the cluster ran (to other
    than Dask's value) is left as the host set it."""

    def __init__(self) -> None:
        import dask

        names = {"PYTHONHASHSEED", "__DASK_PARENT_PID"}
        with contextlib.suppress(Exception):   # a config that is not a dict: Dask says so
            names |= set(dask.config.get("distributed.nanny.pre-spawn-environ") or {})
        self.before = {k: os.environ.get(k) for k in names}
        self.dask: dict[str, str | None] | None = None
        self.method = multiprocessing.get_start_method(allow_none=True)

    def started(self) -> None:
        """Note Dask's values (the cluster is up)."""
        self.dask = {k: os.environ.get(k) for k in self.before}

    def restore(self) -> None:
        for k, v in self.before.items():
            now = os.environ.get(k)
            if now == v or (self.dask is not None and now != self.dask[k]):
                continue
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self.method is None and multiprocessing.get_start_method(allow_none=True) is not None:
            multiprocessing.set_start_method(None, force=True)


def _unguarded_main() -> str | None:
    """The main script's path if it is a file whose top level has no ``if __name__ ==
    "__main__":``: each worker process of a local cluster (Dask starts them with
    ``spawn``) runs such a script again, which starts a cluster again."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not str(path).endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test):
            return None
    return str(path)


def _unguarded_fix(path: str) -> str:
    return (f"the script {show_path(path)} starts it outside `if __name__ == \"__main__\":`, and each "
            f"worker process runs the script again; put the call under that guard")


@contextlib.contextmanager
def connect(spec: ClusterSpec) -> Iterator[Any]:
    """A ``distributed.Client`` on ``spec``'s cluster for the block.

    A local cluster gets its own scratch directory (removed afterwards; one a killed
    run left is removed by the next, :func:`ttforge.atomic.job_dir`), binds the
    scheduler to a free port of 127.0.0.1 and has no dashboard, so two runs on one machine
    do not meet. A remote scheduler must answer within ``spec.connect_timeout`` and have a
    worker within ``spec.worker_timeout``. The client (and a local cluster) are closed at
    the end, also after an error or Ctrl-C.
    """
    if spec.is_local and getattr(multiprocessing.current_process(), "_inheriting", False):
        # a worker process importing an unguarded script again (multiprocessing's own
        # check, as its RuntimeError): one line, not a traceback from each worker
        main = _unguarded_main()
        fix = _unguarded_fix(main) if main else 'start it under `if __name__ == "__main__":`'
        raise SystemExit(f"ttforge: a local Dask cluster cannot start in its own worker process; {fix}")
    distributed = _import_distributed()
    cluster = client = scratch = traces = None
    with _quiet():
        try:
            if spec.is_local:
                traces = _DaskTraces()
                # a job directory: the one a killed run leaves goes with the next run's
                scratch = job_dir("ttforge-dask-")
                # started whole or not at all: a Ctrl-C or SIGTERM in its first second
                # stopped LocalCluster(...) half-way (no cluster to close: "Exception ignored
                # in atexit callback ... AssertionError: Status.init", "Nanny failed to
                # start", a scratch directory its workers still wrote to); held back, it
                # ends the run right after, with the cluster closed below
                with interrupts_held() as before:
                    try:
                        cluster = _start_local(distributed, spec, scratch, before)
                        client = distributed.Client(cluster, set_as_default=False)
                        traces.started()
                    except (OSError, TimeoutError, RuntimeError) as e:
                        main = _unguarded_main()
                        fix = _unguarded_fix(main) if main else "free memory or processes, or lower --jobs"
                        # (the local cluster comes from --jobs / jobs=, not --cluster)
                        raise ClusterError(f"the local Dask cluster of {spec.workers} workers (--jobs) did "
                                           f"not start ({type(e).__name__}: {e}); {fix}") from None
            else:
                # the address checked first: Dask's own errors for a bad one come late
                # and leave a half-made client that holds the process for 60 s on exit
                address = scheduler_file_address(spec.address) if spec.is_file else spec.address
                _check_address(address)
                _probe_scheduler(address, spec)
                try:
                    client = _new_client(distributed, address, spec.connect_timeout)
                except (OSError, TimeoutError) as e:
                    raise ClusterError(f"--cluster {spec.describe()}: cannot reach the scheduler "
                                       f"({type(e).__name__}: {e}); start it (dask scheduler) or check "
                                       f"the address") from None
                except Exception as e:  # noqa: BLE001 - Dask's errors for whatever answered
                    raise ClusterError(f"--cluster {spec.describe()}: what answers there is not a Dask "
                                       f"scheduler ({type(e).__name__}: {e}); check the address and "
                                       f"port") from None
                _wait_for_a_worker(client, spec)
                _check_workers(client, spec)
            yield client
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close(timeout=5)
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close(timeout=10)
            if scratch is not None:
                _remove_scratch(scratch)
            if traces is not None:
                traces.restore()


def _workers(client) -> int:
    try:
        return len(client.nthreads())
    except Exception:  # noqa: BLE001 - the connection is going: the next outcome says so
        return -1


def run_tasks(client, fn: Callable[[Any], Any], items: Sequence[Any],
              on_done: Callable[[int, Any], None], *, label: str = "ttforge",
              worker_timeout: float = 120.0, poll: float = 0.1) -> int:
    """``fn(item)`` as one Dask task per item; ``on_done(index, outcome)`` in the order they
    finish, ``outcome`` being the return value or the exception (the task's own, or
    ``distributed.KilledWorker``). Returns the number of outcomes handed on.

    Raises
    ------
    SchedulerLost
        The client lost its scheduler; every outcome that had arrived was handed on first.
    ClusterError
        No worker at all for ``worker_timeout`` seconds.
    """
    distributed = _import_distributed()
    token = uuid.uuid4().hex[:8]
    futures = {client.submit(fn, item, key=f"{label}-{i}-{token}", pure=False): i
               for i, item in enumerate(items)}
    ac = distributed.as_completed(list(futures), loop=client.loop)
    pending = set(futures)
    done = 0
    idle_since = None
    last_check = time.monotonic()
    try:
        while pending:
            batch = ac.next_batch(block=False)
            if not batch:
                time.sleep(poll)
                now = time.monotonic()
                if now - last_check >= 2.0:
                    last_check = now
                    if _workers(client) == 0:
                        idle_since = idle_since or now
                        if now - idle_since > worker_timeout:
                            raise ClusterError(f"the cluster has had no worker for {worker_timeout:.0f} s "
                                               f"({len(pending)} of {len(futures)} tasks not run); "
                                               f"start workers (dask worker ADDRESS --nthreads 1)")
                    else:
                        idle_since = None
                continue
            for f in batch:
                pending.discard(f)
                try:
                    outcome = f.result()
                except CancelledError as e:
                    if client.status != "running" or "scheduler-connection-lost" in str(e):
                        raise SchedulerLost(f"the scheduler went away after {done} of {len(futures)} "
                                            f"tasks", done=done) from None
                    outcome = e
                except Exception as e:  # noqa: BLE001 - the task's own error is its outcome
                    outcome = e
                f.release()
                on_done(futures[f], outcome)
                done += 1
    finally:
        for f in pending:
            with contextlib.suppress(Exception):
                f.cancel()
    return done


_ONE = threading.Lock()


@contextlib.contextmanager
def one_at_a_time() -> Iterator[None]:
    """Held by a task while it runs a case: the simulator runner sets process-wide
    environment variables for the simulator (``ttforge.sim.runner``), so the threads of
    one worker process take turns."""
    with _ONE:
        yield


def where() -> str:
    """``host:pid`` of this process (the worker a task ran on)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def probe(item: tuple[int, float, str | None]) -> tuple[int, str]:
    """A task that does nothing but wait: ``(index, seconds, marker_dir)`` -> ``(index,
    where())``. With ``marker_dir`` it first creates ``<index>-<pid>`` there (which worker
    took it). For measuring scheduling overhead and testing what a killed worker does."""
    index, seconds, marker_dir = item
    if marker_dir:
        Path(marker_dir, f"{int(index)}-{os.getpid()}").touch()
    if seconds:
        time.sleep(float(seconds))
    return int(index), where()
