import psycopg
import psycopg.errors as pe
import psycopg_pool
import pytest

from writebehind.queue.retry import Backoff, ErrorKind, RetryBudget, classify, same_failure

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
    ConnectionResetError("a sink's own socket"),
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
    pe.WithCheckOptionViolation("new row violates check option for view"),
    psycopg.DataError("client-side data error"),
]
NOT_ROWS = [
    pe.InsufficientPrivilege("permission denied for table"),
    pe.UndefinedTable("relation does not exist"),
    pe.UndefinedColumn("column does not exist"),
    pe.InvalidPassword("password authentication failed"),
    pe.InvalidCatalogName("database does not exist"),
    pe.InvalidColumnReference("no unique or exclusion constraint matching ON CONFLICT"),
]
SUSPECT = [
    pe.DatatypeMismatch("column is of type integer but expression is of type boolean"),
    pe.ProgramLimitExceeded("index row requires 16016 bytes"),
    pe.RaiseException("refused by a trigger"),
]
CLIENT = [
    psycopg.ProgrammingError("cannot adapt type 'set'"),
    TypeError("a value the client cannot adapt"),
    ValueError("zip() argument 2 is shorter than argument 1"),
    RuntimeError("a bug in a sink"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient(error: BaseException) -> None:
    assert classify(error) is ErrorKind.TRANSIENT


@pytest.mark.parametrize("error", REJECTED, ids=lambda e: type(e).__name__)
def test_rejected_data(error: BaseException) -> None:
    assert classify(error) is ErrorKind.REJECTED_DATA


@pytest.mark.parametrize("error", NOT_ROWS, ids=lambda e: type(e).__name__)
def test_not_about_rows(error: BaseException) -> None:
    assert classify(error) is ErrorKind.NOT_ROWS


@pytest.mark.parametrize("error", CLIENT, ids=lambda e: type(e).__name__)
def test_raised_by_the_client(error: BaseException) -> None:
    assert classify(error) is ErrorKind.CLIENT


@pytest.mark.parametrize("error", SUSPECT, ids=lambda e: type(e).__name__)
def test_suspect_data(error: BaseException) -> None:
    assert classify(error) is ErrorKind.SUSPECT_DATA


def test_same_failure_compares_sqlstate_type_and_message() -> None:
    assert same_failure(pe.RaiseException("no"), pe.RaiseException("no"))
    assert not same_failure(pe.RaiseException("no"), pe.RaiseException("not this one"))
    assert not same_failure(pe.RaiseException("no"), pe.CheckViolation("no"))


def test_the_time_budget_runs_from_the_first_failure_of_a_run() -> None:
    budget = RetryBudget(max_retries=None, max_retry_time=60.0)
    assert budget.remaining(0, now=100.0) == 60.0
    budget.failed(100.0)
    budget.failed(130.0)  # a later failure, maybe of a later batch, does not restart it
    assert budget.remaining(0, now=130.0) == 30.0
    assert budget.remaining(5, now=161.0) == -1.0
    budget.succeeded()
    budget.failed(200.0)
    assert budget.remaining(0, now=210.0) == 50.0


def test_max_retries_counts_one_batch_and_either_limit_gives_up() -> None:
    budget = RetryBudget(max_retries=3, max_retry_time=None)
    budget.failed(0.0)
    assert budget.remaining(2, now=1e9) is None
    assert budget.remaining(3, now=1.0) == 0.0
    both = RetryBudget(max_retries=3, max_retry_time=10.0)
    both.failed(0.0)
    assert both.remaining(1, now=11.0) == -1.0
    assert both.remaining(3, now=1.0) == 0.0


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
