"""The queue: WriteBehindQueue and its parts.

``buffer`` takes rows in (backpressure, lanes), ``batch`` assembles batches (pure), ``delivery``
writes one (bisecting refused rows, retrying in place), ``retry`` is the policy and the error
classification, ``opening`` opens the sink, ``replay`` and ``remap`` feed a dead process's
journal back, ``callbacks`` runs ``on_failure``, ``lifecycle`` and ``signals`` drain at exit and
rebuild after a fork, ``metrics`` and ``tracing`` observe it; ``eager`` is the queue that writes
in the caller's transaction.
"""
