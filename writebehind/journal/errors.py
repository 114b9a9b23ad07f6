"""The journal's exceptions, all of them WriteBehindErrors."""

from __future__ import annotations

from writebehind.errors import WriteBehindError

__all__ = [
    "JournalClosed",
    "JournalError",
    "JournalFull",
    "JournalSyncError",
    "JournalVersionError",
]


class JournalError(WriteBehindError):
    """Base class of the journal's errors."""


class JournalFull(JournalError):
    """The journal is at ``max_bytes`` (or the disk is full) and the timeout ran out."""


class JournalClosed(JournalError, RuntimeError):
    """The journal was closed."""


class JournalSyncError(JournalError, OSError):
    """``fdatasync`` failed and the records could not be written durably again: the records of
    the append that raised may or may not survive a power cut (they do survive a process kill)."""


class JournalVersionError(JournalError):
    """A segment was written by a newer format version: not corruption, so nothing is set aside."""
