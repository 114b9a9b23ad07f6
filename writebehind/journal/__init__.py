"""The durable journal: rows accepted by ``put()`` kept on local disk until written.

- ``options``: ``Journal``, what a queue is given (path, sync mode, bounds).
- ``codec``: one converted row (key and parameters) to bytes and back, plain and versioned;
  its parts are the ``codec_*`` modules.
- ``segments``: append-only segment files of framed records, one locked directory per process,
  taken over by the next process when its owner died; its parts are ``framing``,
  ``segment_files``, ``reader``, ``instances``, ``writer``, ``group_commit`` and ``errors``.
- ``keeper``: a queue's journal in one process; ``progress``: what is done of its records.
"""

from .options import Journal

__all__ = ["Journal"]
