"""Journal records describe themselves: the layout of a converted row's values is a meta record
ahead of the rows in every segment that holds them, and replay maps values by its names."""

from __future__ import annotations

from pathlib import Path

import pytest

from writebehind import Journal
from writebehind._sink import Deletion, RowLayout
from writebehind.journal.keeper import (
    INTAKE_LANE,
    QueueJournal,
    decode_layout,
    decode_record,
    encode_layout,
    encode_record,
)
from writebehind.journal.segments import META_SEQ, SegmentReader

FIRST = RowLayout("public.t", ("k", "a", "b"), ("integer", "text", "text"), ("k",))
SECOND = RowLayout("public.t", ("k", "a", "c"), ("integer", "text", "jsonb"), ("k",))


def test_a_layout_record_round_trips_and_a_bad_one_is_refused() -> None:
    assert decode_layout(encode_layout(3, FIRST)) == (3, FIRST)
    with pytest.raises(ValueError):
        decode_layout(encode_record(0, 1, (1, "a", "b"), {}, 1))
    with pytest.raises(ValueError):
        decode_layout(b"\x03")


def test_every_segment_holds_the_layouts_of_the_rows_in_it(tmp_path: Path) -> None:
    journal = QueueJournal(Journal(tmp_path, max_bytes=64 * 1024, segment_bytes=4096), "t", 1)
    first = journal.layout_number(FIRST)
    assert journal.layout_number(FIRST) == first == 1
    for k in range(200):
        journal.record_one(encode_record(0, k, (k, f"a{k}", "b"), {}, first), 0)
    second = journal.layout_number(SECOND)
    assert second == 2
    for k in range(200, 400):
        journal.record([encode_record(0, k, (k, f"a{k}", "{}"), {}, second)], [0])
    directory = journal.path
    journal.close()
    segments = sorted(directory.glob("*.seg"))
    assert len(segments) > 5
    for segment in segments:
        layouts: dict[int, RowLayout] = {}
        rows = 0
        # Each segment alone, as if those before it were released.
        for other in segments:
            if other != segment:
                other.rename(other.with_suffix(".away"))
        try:
            for record in SegmentReader(directory, repair=False).records():
                if record.seq == META_SEQ:
                    number, layout = decode_layout(record.payload)
                    layouts[number] = layout
                    continue
                row = decode_record(record.payload)
                expected = FIRST if row.params[0] < 200 else SECOND
                assert layouts[row.layout].columns == expected.columns
                rows += 1
        finally:
            for other in directory.glob("*.away"):
                other.rename(other.with_suffix(".seg"))
        assert rows > 0, segment.name


def test_a_delete_record_keeps_its_key_columns_by_name_and_its_lane() -> None:
    replayed = decode_record(encode_record(3, (1, "x"), Deletion((1, "x")), {"a": 1, "b": "x"}))
    assert (replayed.deleted, replayed.lane, replayed.row) == (True, 3, {"a": 1, "b": "x"})
    unchecked = decode_record(encode_record(-1, None, Deletion(()), {"a": 2, "b": "y"}))
    assert (unchecked.deleted, unchecked.lane) == (True, INTAKE_LANE)
    put = decode_record(encode_record(-1, None, (), {"a": 2, "b": "y"}))
    assert not put.deleted
