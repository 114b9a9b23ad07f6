from decimal import Decimal
from typing import Any

from writebehind._sink import Deletion
from writebehind.queue.batch import Entry, coalesce, combine, seconds_until_due, split_at_rewrites


def entry(key: object, value: object, at: float = 0.0) -> Entry:
    return Entry(key, (key, value), {"id": key, "value": value}, at)


def test_coalesce_keeps_last_value_per_key_in_first_seen_order() -> None:
    batch = coalesce([entry(1, "a"), entry(2, "x"), entry(1, "b"), entry(3, "z"), entry(1, "c")])
    assert [e.params for e in batch.entries] == [(1, "c"), (2, "x"), (3, "z")]
    assert batch.weights == [3, 1, 1]


def test_coalesce_without_duplicates_keeps_everything() -> None:
    rows = [entry(i, i) for i in range(5)]
    batch = coalesce(rows)
    assert batch.entries == rows
    assert batch.weights == [1] * 5


def test_coalesce_composite_keys() -> None:
    batch = coalesce([entry((1, "a"), 1), entry((1, "b"), 2), entry((1, "a"), 3)])
    assert [e.params[1] for e in batch.entries] == [3, 2]
    assert sum(batch.weights) == 3


def test_seconds_until_due_counts_from_the_oldest_row() -> None:
    assert seconds_until_due(oldest_enqueued_at=10.0, now=10.25, flush_interval=1.0) == 0.75
    assert seconds_until_due(oldest_enqueued_at=10.0, now=11.0, flush_interval=1.0) == 0.0
    assert seconds_until_due(oldest_enqueued_at=10.0, now=99.0, flush_interval=1.0) == 0.0


def test_coalesce_sorts_by_key_so_concurrent_writers_lock_rows_in_one_order() -> None:
    batch = coalesce([entry("c", 1), entry("a", 2), entry("b", 3), entry("a", 4)])
    assert [e.key for e in batch.entries] == ["a", "b", "c"]
    assert [e.params[1] for e in batch.entries] == [4, 3, 1]
    assert batch.weights == [2, 1, 1]


def test_coalesce_keeps_first_seen_order_when_keys_cannot_be_compared() -> None:
    batch = coalesce([entry((1, None), 1), entry((1, "x"), 2), entry((1, None), 3)])
    assert [e.key for e in batch.entries] == [(1, None), (1, "x")]
    assert batch.weights == [2, 1]


def test_coalesce_keeps_put_order_when_ordering_keys_raises_something_else() -> None:
    # Comparing a Decimal NaN raises decimal.InvalidOperation, not TypeError.
    keys = [Decimal(3), Decimal("NaN"), Decimal(1)]
    batch = coalesce([entry(key, i) for i, key in enumerate(keys)])
    assert [e.params[1] for e in batch.entries] == [0, 1, 2]


def test_coalesce_keeps_the_row_a_rule_prefers_and_accounts_the_others_to_it() -> None:
    rows = [entry(1, 2), entry(1, 3), entry(1, 1), entry(2, 0)]
    first = coalesce(rows, lambda kept, newer: False)
    assert [e.params for e in first.entries] == [(1, 2), (2, 0)]
    assert first.weights == [3, 1]
    highest = coalesce(rows, lambda kept, newer: newer[1] > kept[1])
    assert [e.params for e in highest.entries] == [(1, 3), (2, 0)]


class SumValues:
    def merge(self, kept: tuple[Any, ...], newer: tuple[Any, ...]) -> tuple[Any, ...]:
        return (newer[0], kept[1] + newer[1])

    def row_of(self, params: tuple[Any, ...]) -> dict[str, Any]:
        return {"id": params[0], "value": params[1]}


def test_coalesce_merges_the_rows_of_a_key_into_the_row_they_make() -> None:
    batch = coalesce([entry(1, 2), entry(2, 5), entry(1, 3)], merger=SumValues())
    assert [(e.params, e.row) for e in batch.entries] == [
        ((1, 5), {"id": 1, "value": 5}),
        ((2, 5), {"id": 2, "value": 5}),
    ]
    assert batch.weights == [2, 1]


def deletion(key: object, version: object = None) -> Entry:
    params = Deletion((key,) if version is None else (key, version))
    return Entry(key, params, {"id": key}, 0.0, deletes=1)


def test_a_delete_is_the_newest_write_of_its_key_in_a_batch() -> None:
    batch = coalesce([entry(1, "a"), deletion(1), entry(2, "b"), deletion(3), deletion(3)])
    assert [type(e.params).__name__ for e in batch.entries] == ["Deletion", "tuple", "Deletion"]
    assert batch.weights == [2, 1, 2]
    assert [e.deletes for e in batch.entries] == [1, 0, 2]  # each delete() counts


def test_a_delete_merges_with_nothing() -> None:
    class Adding:
        def merge(self, kept: Any, newer: Any) -> Any:
            return (kept[0], kept[1] + newer[1])

        def row_of(self, params: Any) -> Any:
            return {"id": params[0], "value": params[1]}

    merged = combine(entry(1, 2), deletion(1), merger=Adding())
    assert (type(merged.params), merged.weight) == (Deletion, 2)
    batch = coalesce([entry(1, 2), entry(1, 3), deletion(1), entry(2, 5)], merger=Adding())
    assert [e.params for e in batch.entries] == [(1,), (2, 5)]


def test_rows_put_after_a_delete_of_their_key_start_a_batch_of_their_own() -> None:
    rows = [entry("a", 1), deletion("a"), entry("b", 1), entry("a", 2), deletion("b")]
    rows += [entry("b", 2), entry("c", 1)]
    parts = split_at_rewrites(rows)
    assert [[(e.key, type(e.params).__name__) for e in part] for part in parts] == [
        [("a", "tuple"), ("a", "Deletion"), ("b", "tuple")],
        [("a", "tuple"), ("b", "Deletion")],
        [("b", "tuple"), ("c", "tuple")],
    ]
    plain = [entry(i, i) for i in range(3)]
    assert split_at_rewrites(plain) == [plain]
