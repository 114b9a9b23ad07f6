"""What the framework integrations (``writebehind.flask``, ``writebehind.django``) share: the
queues of a process, declared in the framework's settings and opened once per process."""
