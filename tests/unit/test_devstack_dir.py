"""The devstack's state directory is private and never reached through a symlink."""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from replaywatch.devstack.postgres import as_user, can_set_groups, postgres_group
from replaywatch.devstack.stack import Stack, ensure_private_dir
from replaywatch.exceptions import DevstackError


def test_created_private(tmp_path: Path) -> None:
    root = tmp_path / "state"
    ensure_private_dir(root)
    info = os.lstat(root)
    group = postgres_group()
    if group is None:
        assert stat.S_IMODE(info.st_mode) == 0o700
    else:  # root runs PostgreSQL as another user: only that user's group may traverse
        assert stat.S_IMODE(info.st_mode) == 0o710 and info.st_gid == group


def test_an_existing_directory_is_made_private(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)
    ensure_private_dir(root)
    assert stat.S_IMODE(os.lstat(root).st_mode) in (0o700, 0o710)


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.chmod(target, 0o755)
    link = tmp_path / "state"
    link.symlink_to(target)
    with pytest.raises(DevstackError, match="symlink"):
        ensure_private_dir(link)
    assert stat.S_IMODE(os.lstat(target).st_mode) == 0o755  # the target is not touched


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a directory owned by someone else")
    root = tmp_path / "state"
    root.mkdir()
    os.chown(root, 65534, 65534)
    with pytest.raises(DevstackError, match="another user"):
        ensure_private_dir(root)


@pytest.fixture
def setgroups_probe() -> Iterator[None]:
    can_set_groups.cache_clear()
    yield
    can_set_groups.cache_clear()


def test_supplementary_groups_are_dropped_only_where_the_kernel_allows_it(
    monkeypatch: pytest.MonkeyPatch, setgroups_probe: None
) -> None:
    """A user namespace that denies setgroups(2) (some CI sandboxes) made every
    PostgreSQL command fail with EPERM: there the command keeps the groups it has."""
    me = pwd.getpwuid(os.getuid())
    assert as_user(None) == {}

    def denied(groups: list[int]) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setgroups", denied)
    assert as_user(me.pw_name) == {"user": me.pw_uid, "group": me.pw_gid}
    can_set_groups.cache_clear()
    monkeypatch.setattr(os, "setgroups", lambda groups: None)
    assert as_user(me.pw_name) == {"user": me.pw_uid, "group": me.pw_gid, "extra_groups": []}


class _Refused:
    """A service whose start the system refuses, as Popen does for a forbidden setgroups."""

    name = "postgres"
    marker = "nothing-of-ours"

    def start(self) -> int:
        raise PermissionError(1, "Operation not permitted")

    def wait_ready(self, pid: int, timeout: float = 30.0) -> None:
        raise AssertionError("never reached")


def test_a_start_the_system_refuses_is_one_line_naming_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = Stack(tmp_path / "state")
    monkeypatch.setattr(Stack, "service", lambda self, name: _Refused())
    with pytest.raises(DevstackError, match=r"^postgres could not be started: PermissionError: .*not permitted"):
        stack.start("postgres")


def test_services_saving_their_pids_at_once_never_fail(tmp_path: Path) -> None:
    """The services start in parallel threads and each saves the state file: a shared
    temporary file was once renamed away under another thread (a failed CI start)."""
    from concurrent.futures import ThreadPoolExecutor

    stack = Stack(tmp_path / "state")
    state = stack._ports()

    def save(i: int) -> None:
        for n in range(200):
            state["s3"]["pid"] = i * 1000 + n
            stack._save(state)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(save, range(4)))  # re-raises what any thread raised
    assert stack._state()["s3"]["pid"] is not None
    assert sorted(p.name for p in stack.root.iterdir() if p.name.startswith("state")) == ["state.json"]


def test_every_port_of_a_new_stack_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ports picked one at a time can repeat (the kernel hands a released one out again);
    the registry and its management interface on one port shared it, and some requests
    reached the management router (404). The picker is made to offer a repeat here."""
    import socket

    offered = iter([5001, 5001, 5002, 5001, 5003, 5004, 5002, 5005, 5006, 5007, 5008])

    class Repeating:
        def __init__(self, *args: object) -> None:
            self.port = next(offered)

        def bind(self, addr: tuple[str, int]) -> None:
            pass

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

        def close(self) -> None:
            pass

    with monkeypatch.context() as patched:
        patched.setattr(socket, "socket", Repeating)
        state = Stack(tmp_path / "state")._ports()
    ports = [p for st in state.values() for k, p in st.items() if k != "pid"]
    assert len(ports) == 7 and len(set(ports)) == 7


def test_a_configured_port_another_service_uses_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAYWATCH_DEVSTACK_KAFKA_PORT", "6100")
    monkeypatch.setenv("REPLAYWATCH_DEVSTACK_REGISTRY_PORT", "6100")
    with pytest.raises(DevstackError, match=r"_PORT=6100 is a port another service of the devstack uses"):
        Stack(tmp_path / "state")._ports()


def test_a_registry_sharing_its_management_port_is_not_started(tmp_path: Path) -> None:
    from replaywatch.devstack.registry import Registry

    with pytest.raises(DevstackError, match="both name port 6200"):
        Registry(tmp_path, 6200, 6200).start()


def test_logs_prints_the_last_matching_lines_of_each_service(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from replaywatch.cli import app

    stack = Stack(tmp_path / "state")
    log = stack.service("registry").log
    log.parent.mkdir(parents=True)
    log.write_text("".join(f'access path="/p{i}" response_code="{404 if i % 3 == 0 else 200}"\n' for i in range(10)))
    run = CliRunner().invoke(app, ["devstack", "logs", "registry", "--lines", "2", "--match", 'response_code="4',
                                   "--dir", str(stack.root)])  # fmt: skip
    assert run.exit_code == 0, run.output
    assert run.output.splitlines()[1:] == [f'access path="/p{i}" response_code="404"' for i in (6, 9)]
    assert "(2 of 10 lines)" in run.output.splitlines()[0]
    every = CliRunner().invoke(app, ["devstack", "logs", "--lines", "1", "--dir", str(stack.root)])
    assert [line.split(":")[0] for line in every.output.splitlines() if line.startswith("==>")] == [
        "==> kafka", "==> postgres", "==> s3", "==> registry"]  # fmt: skip
    wrong = CliRunner().invoke(app, ["devstack", "logs", "zookeeper", "--dir", str(stack.root)])
    assert wrong.exit_code == 2 and "no service 'zookeeper'" in wrong.output
