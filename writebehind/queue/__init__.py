"""The queue: WriteBehindQueue and its parts.

``core`` is the queue's face, WriteBehindQueue, which delegates: ``options`` checks its
arguments, ``parts`` builds what runs (again in a forked child), ``intake`` takes rows and
deletes in, ``buffer`` holds them in lanes under backpressure (``lanes``, the producers' side
``putting``, the writers' side ``taking``), ``writers`` runs the writer threads, ``batch``
assembles batches (pure), ``delivery`` writes one through the sink (``batch_run``: retries in
place, refused rows isolated by halving; ``paced``, ``log_text``), ``retry`` is the policy and
the error classification, ``opening`` opens the sink, ``journaling``, ``replay`` and ``remap``
keep the journal and feed a dead process's rows back, ``callbacks`` runs ``on_failure``,
``draining`` waits for flush() and close(), ``lifecycle`` and ``signals`` drain at exit and
rebuild after a fork, ``health``, ``metrics`` and ``tracing`` observe it; ``eager`` is the queue
that writes in the caller's transaction.
"""
