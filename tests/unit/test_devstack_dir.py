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
