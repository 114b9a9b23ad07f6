"""The journal's files are private: they hold rows as they were put, often personal data.

Every folder it makes is 0700 and every file 0600, whatever the process's umask (the mode is
set again once made: a umask only ever takes bits away, and one of 0 would leave files open to
all). Files are opened without following a symbolic link (``O_NOFOLLOW``), so that a link
planted in a journal folder cannot send a write, or a read, elsewhere. A journal folder that
other users may write to, or that belongs to another user, is refused, as PostgreSQL refuses a
data directory and OpenSSH a key file that others could read or replace.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = [
    "PRIVATE_FILE",
    "PRIVATE_FOLDER",
    "check_journal_folders",
    "make_folder",
    "make_folders",
    "make_private",
    "open_private",
    "read_private",
    "write_private",
]

logger = logging.getLogger("writebehind.journal")

PRIVATE_FOLDER = 0o700
"""The mode of every folder the journal makes."""
PRIVATE_FILE = 0o600
"""The mode of every file the journal makes."""

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # not on every platform: there, links are followed
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def make_folder(path: Path) -> None:
    """Make the folder ``path``, 0700 (FileExistsError if it exists)."""
    os.mkdir(path, PRIVATE_FOLDER)
    make_private(path)


def make_private(folder: Path) -> None:
    """Set ``folder`` 0700, through a descriptor opened without following a link."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC)
    try:
        os.fchmod(fd, PRIVATE_FOLDER)
    finally:
        os.close(fd)


def make_folders(path: Path) -> None:
    """Make ``path`` and the folders missing above it, each one made 0700; those that exist
    are left as they are."""
    missing = []
    while not path.exists():
        missing.append(path)
        if path == path.parent:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            make_folder(folder)
        except FileExistsError:  # made meanwhile by another process
            if not folder.is_dir():
                raise


def open_private(path: Path, flags: int) -> int:
    """``os.open`` of ``path`` with ``flags``, never through a symbolic link; a file it creates
    is 0600."""
    fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC, PRIVATE_FILE)
    if flags & os.O_CREAT:
        try:
            os.fchmod(fd, PRIVATE_FILE)
        except BaseException:
            os.close(fd)
            raise
    return fd


def read_private(path: Path) -> bytes:
    """The bytes of ``path``, read without following a symbolic link (OSError then)."""
    with os.fdopen(open_private(path, os.O_RDONLY), "rb") as file:
        return file.read()


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, made 0600 or emptied first, never through a link."""
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as file:
        file.write(data)


def check_journal_folders(root: Path, queue: str) -> None:
    """Refuse, with a PermissionError naming the folder and what to do, a journal ``root`` that
    other users may write to (unless it is sticky, as ``/tmp`` is: there no user may remove or
    rename another's entries) or that belongs to another user; and the queue's own folder
    ``<root>/<queue>`` unless this user owns it. The queue's folder, if more open than 0700,
    is made 0700, with a warning naming it. A folder not made yet is made private later."""
    user = os.geteuid()
    try:
        found = os.stat(root)  # the path the application gave: a link it made is its choice
    except FileNotFoundError:
        return
    # Sticky and root's, as /tmp: no other user may remove or rename this user's entries (the
    # owner of a sticky folder may, so one of another user's is not exempt).
    sticky = bool(found.st_mode & stat.S_ISVTX) and found.st_uid in (0, user)
    if found.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky:
        raise PermissionError(
            f"journal {root}: other users may write to this folder (mode "
            f"{stat.S_IMODE(found.st_mode):04o}), and so replace the rows kept in it: make it "
            f"private (chmod go-w {root}) or give the journal a folder of its own"
        )
    if found.st_uid != user and not (sticky and found.st_uid == 0):
        raise PermissionError(
            f"journal {root}: this folder belongs to another user (uid {found.st_uid}), who "
            f"may read or replace the rows kept in it: give the journal a folder that this "
            f"user (uid {user}) owns"
        )
    folder = root / queue
    try:
        own = os.lstat(folder)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(own.st_mode):
        raise PermissionError(
            f"journal {folder}: the queue's folder is not a folder (a symbolic link, or a "
            f"file): remove it, or give the journal another path"
        )
    if own.st_uid != user:
        raise PermissionError(
            f"journal {folder}: the queue's folder belongs to another user (uid {own.st_uid}), "
            f"who may read or replace its rows: remove it, or give the journal another path"
        )
    mode = stat.S_IMODE(own.st_mode)
    if mode & 0o077:
        make_private(folder)
        logger.warning(
            "journal %s: the queue's folder was open to other users (mode %04o); made 0700",
            folder,
            mode,
        )
