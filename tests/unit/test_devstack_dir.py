"""The devstack's state directory is private and never reached through a symlink."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from replaywatch.devstack.postgres import postgres_group
from replaywatch.devstack.stack import ensure_private_dir
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
