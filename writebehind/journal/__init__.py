"""The durable journal: rows accepted by ``put()`` kept on local disk until written.

- ``options``: ``Journal``, what a queue is given (path, sync mode, bounds).
- ``codec``: one converted row (key and parameters) to bytes and back, plain and versioned.
- ``segments``: append-only segment files of framed records, one locked directory per process,
  taken over by the next process when its owner died.
"""

from .options import Journal

__all__ = ["Journal"]
