import psycopg
import psycopg.errors as pe
import psycopg_pool
import pytest

from writebehind._retry import Backoff, ErrorKind, classify

TRANSIENT = [
    pe.AdminShutdown("terminating connection due to administrator command"),
    pe.CannotConnectNow("the database system is starting up"),
    pe.TooManyConnections("too many clients"),
    pe.SerializationFailure("could not serialize access"),
    pe.DeadlockDetected("deadlock detected"),
    pe.LockNotAvailable("could not obtain lock"),
    pe.QueryCanceled("canceling statement due to statement timeout"),
    pe.ConnectionFailure("connection failure"),
    psycopg.OperationalError("server closed the connection unexpectedly"),
    psycopg.InterfaceError("the connection is closed"),
    psycopg_pool.PoolTimeout("couldn't get a connection after 10 sec"),
]
REJECTED = [
    pe.CheckViolation("new row violates check constraint"),
    pe.NotNullViolation("null value in column"),
    pe.UniqueViolation("duplicate key value"),
    pe.ForeignKeyViolation("violates foreign key constraint"),
    pe.InvalidTextRepresentation("invalid input syntax for type integer"),
    pe.NumericValueOutOfRange("integer out of range"),
    pe.StringDataRightTruncation("value too long"),
    pe.TransactionIntegrityConstraintViolation("deferred constraint"),
    psycopg.DataError("client-side data error"),
    psycopg.ProgrammingError("cannot adapt type 'set'"),
]
UNKNOWN = [
    pe.InsufficientPrivilege("permission denied for table"),
    pe.UndefinedTable("relation does not exist"),
    RuntimeError("a bug in a sink"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient(error: BaseException) -> None:
    assert classify(error) is ErrorKind.TRANSIENT


@pytest.mark.parametrize("error", REJECTED, ids=lambda e: type(e).__name__)
def test_rejected_data(error: BaseException) -> None:
    assert classify(error) is ErrorKind.REJECTED_DATA


@pytest.mark.parametrize("error", UNKNOWN, ids=lambda e: type(e).__name__)
def test_unknown(error: BaseException) -> None:
    assert classify(error) is ErrorKind.UNKNOWN


def test_backoff_doubles_from_first_up_to_cap() -> None:
    top = Backoff(0.1, 1.0, random=lambda: 1.0)
    assert [round(top.delay(n), 6) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert top.delay(10_000) == 1.0


def test_backoff_jitter_stays_between_half_and_full_delay() -> None:
    low = Backoff(0.1, 1.0, random=lambda: 0.0)
    assert [round(low.delay(n), 6) for n in range(1, 4)] == [0.05, 0.1, 0.2]
    real = Backoff(0.1, 1.0)
    delays = [real.delay(3) for _ in range(200)]
    assert all(0.2 <= d <= 0.4 for d in delays)
    assert len(set(delays)) > 1
