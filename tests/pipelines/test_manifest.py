"""Contract 2's failure rows: one column list, the one failures.parquet writes."""

from __future__ import annotations

import pyarrow.parquet as pq

from pipelines.manifest import FAILURE_COLUMNS, FAILURE_SCHEMA, FailureRecord, write_dataset


def test_failure_columns_are_the_record_fields_and_the_written_columns(tmp_path) -> None:
    assert FAILURE_COLUMNS == ["clip_id", "relpath", "stage", "error", "message"]
    assert FAILURE_COLUMNS == list(FailureRecord.model_fields) == FAILURE_SCHEMA.names
    rec = FailureRecord(clip_id="c1", relpath="videos/c1.mp4", stage="probe", error="empty_file", message="re-copy it")
    for failures in ([rec], []):  # an empty failures.parquet has the same columns
        write_dataset(tmp_path, [], failures, [], {"name": "t", "source": "folder", "classes": [], "media_root": "."})
        table = pq.read_table(tmp_path / "failures.parquet")
        assert table.column_names == FAILURE_COLUMNS
        assert table.to_pylist() == [rec.model_dump()] * len(failures)


def test_each_parquet_schema_has_its_records_fields_in_order() -> None:
    from pipelines.manifest import BOX_SCHEMA, MANIFEST_SCHEMA, BoxRecord, ClipRecord

    assert MANIFEST_SCHEMA.names == list(ClipRecord.model_fields)
    assert BOX_SCHEMA.names == list(BoxRecord.model_fields)
