"""Parquet tables: round trip through write_table/read_table, and every refusal."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmu_migrate.data import Columns, read_table, write_table
from dmu_migrate.errors import InputError

OLD = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.5]])
X = np.arange(12, dtype=np.float64).reshape(3, 4) / 7


def write_raw(path: Path, columns: dict[str, pa.Array]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def test_round_trip_with_string_labels_and_role(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_table(
        path,
        {
            "label": np.array(["dog", "cat", "dog"]),
            "old": OLD,
            "x": X,
            "role": np.array(["query", "gallery", "gallery"], dtype=object),
        },
    )
    schema = pq.read_schema(path)
    assert schema.field("old").type == pa.list_(pa.float32(), 2)  # fixed-size list
    assert schema.field("x").type == pa.list_(pa.float32(), 4)

    table = read_table(path)
    assert len(table) == 3
    assert list(table.classes) == ["cat", "dog"]
    np.testing.assert_array_equal(table.labels, [1, 0, 1])
    assert table.labels.dtype == np.int64
    assert table.old.dtype == np.float32 and table.x.dtype == np.float32
    np.testing.assert_array_equal(table.old, OLD.astype(np.float32))
    np.testing.assert_array_equal(table.x, X.astype(np.float32))
    assert table.role is not None
    assert list(table.role) == ["query", "gallery", "gallery"]
    assert table.path == path
    assert table.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()


def test_integer_labels_get_sorted_codes_and_no_role_column(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_table(path, {"label": np.array([10, 5, 10]), "old": OLD, "x": X})
    table = read_table(path)
    np.testing.assert_array_equal(table.classes, [5, 10])
    np.testing.assert_array_equal(table.labels, [1, 0, 1])
    np.testing.assert_array_equal(table.classes[table.labels], [10, 5, 10])
    assert table.role is None


def test_custom_column_names_and_no_x(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_table(path, {"id": np.array([1, 2, 1]), "emb_v1": OLD, "split": np.array(["query"] * 3)})
    table = read_table(path, Columns(label="id", old="emb_v1", role="split"), need_x=False)
    np.testing.assert_array_equal(table.old, OLD.astype(np.float32))
    assert table.x.shape == (3, 0)
    assert table.role is not None and list(table.role) == ["query"] * 3


def test_variable_list_column_of_equal_lengths_is_accepted(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "t.parquet",
        {"label": pa.array([0, 1]), "old": pa.array([[1.0, 2.0], [3.0, 4.0]])},  # list<double>
    )
    table = read_table(path, need_x=False)
    np.testing.assert_array_equal(table.old, [[1.0, 2.0], [3.0, 4.0]])


def test_fingerprint_changes_with_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_table(a, {"label": np.array([0, 1]), "old": OLD[:2]})
    write_table(b, {"label": np.array([0, 1]), "old": OLD[:2] + 1})
    assert read_table(a, need_x=False).fingerprint != read_table(b, need_x=False).fingerprint


# --- refusals ---------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.parquet.*does not exist"):
        read_table(tmp_path / "nope.parquet")


def test_file_that_is_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    path.write_text("label,old\n1,2\n")
    with pytest.raises(InputError, match=r"t\.parquet.*not readable Parquet"):
        read_table(path)


def test_empty_table(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "empty.parquet",
        {"label": pa.array([], pa.int64()), "old": pa.array([], pa.list_(pa.float32()))},
    )
    with pytest.raises(InputError, match=r"empty\.parquet.*no rows"):
        read_table(path, need_x=False)


def test_missing_label_column(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_table(path, {"cls": np.array([0, 1, 0]), "old": OLD, "x": X})
    with pytest.raises(InputError, match=r"no column 'label'.*columns: cls, old, x"):
        read_table(path)


@pytest.mark.parametrize("missing", ["old", "x"])
def test_missing_vector_column(tmp_path: Path, missing: str) -> None:
    path = tmp_path / "t.parquet"
    data: dict[str, np.ndarray | list] = {"label": np.array([0, 1, 0]), "old": OLD, "x": X}
    del data[missing]
    write_table(path, data)
    with pytest.raises(InputError, match=rf"t\.parquet' has no column '{missing}'"):
        read_table(path)


def test_missing_x_is_fine_without_need_x(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_table(path, {"label": np.array([0, 1, 0]), "old": OLD})
    assert read_table(path, need_x=False).old.shape == (3, 2)


def test_ragged_vectors(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "t.parquet",
        {
            "label": pa.array([0, 1, 2]),
            "old": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0]], pa.list_(pa.float32())),
        },
    )
    with pytest.raises(InputError, match=r"column 'old'.*different lengths.*row 0: 2, row 2: 1"):
        read_table(path, need_x=False)


def test_nan_in_a_vector(tmp_path: Path) -> None:
    old = OLD.copy()
    old[1, 0] = np.nan
    path = tmp_path / "t.parquet"
    write_table(path, {"label": np.array([0, 1, 0]), "old": old})
    with pytest.raises(InputError, match=r"column 'old'.*NaN or inf \(first at row 1\)"):
        read_table(path, need_x=False)


def test_inf_in_x(tmp_path: Path) -> None:
    x = X.copy()
    x[2, 3] = np.inf
    path = tmp_path / "t.parquet"
    write_table(path, {"label": np.array([0, 1, 0]), "old": OLD, "x": x})
    with pytest.raises(InputError, match=r"column 'x'.*NaN or inf \(first at row 2\)"):
        read_table(path)


def test_null_element_inside_a_vector(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "t.parquet",
        {"label": pa.array([0, 1]), "old": pa.array([[1.0, 2.0], [3.0, None]])},
    )
    with pytest.raises(InputError, match=r"column 'old'.* 1 null numbers inside vectors"):
        read_table(path, need_x=False)


def test_null_vector_row(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "t.parquet",
        {"label": pa.array([0, 1]), "old": pa.array([[1.0, 2.0], None])},
    )
    with pytest.raises(InputError, match=r"column 'old'.*1 empty rows"):
        read_table(path, need_x=False)


def test_non_list_column(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "t.parquet", {"label": pa.array([0, 1]), "old": pa.array([0.5, 1.5])}
    )
    with pytest.raises(InputError, match=r"column 'old' of '.*t\.parquet' is double, not a list"):
        read_table(path, need_x=False)


def test_bad_role_values(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_table(
        path,
        {"label": np.array([0, 1, 0]), "old": OLD, "role": np.array(["query", "train", "test"])},
    )
    with pytest.raises(InputError, match=r"column 'role'.*\['test', 'train'\]"):
        read_table(path, need_x=False)


def test_null_role_value(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "t.parquet",
        {
            "label": pa.array([0, 1]),
            "old": pa.array([[1.0], [2.0]]),
            "role": pa.array(["gallery", None]),
        },
    )
    with pytest.raises(InputError, match=r"column 'role'.*\['None'\]"):
        read_table(path, need_x=False)


def test_null_label_is_an_input_error(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "t.parquet",
        {"label": pa.array(["a", None]), "old": pa.array([[1.0], [2.0]])},
    )
    with pytest.raises(InputError, match="label"):
        read_table(path, need_x=False)


def test_null_integer_label_is_an_input_error(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "t.parquet",
        {"label": pa.array([1, None]), "old": pa.array([[1.0], [2.0]])},
    )
    with pytest.raises(InputError, match="label"):
        read_table(path, need_x=False)


def test_list_of_strings_is_an_input_error(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "t.parquet",
        {"label": pa.array([0, 1]), "old": pa.array([["a", "b"], ["c", "d"]])},
    )
    with pytest.raises(InputError, match="old"):
        read_table(path, need_x=False)


def test_empty_vectors_and_bool_lists_are_refused(tmp_path: Path) -> None:
    empty = write_raw(
        tmp_path / "e.parquet",
        {"label": pa.array([0, 1]), "old": pa.array([[], []], type=pa.list_(pa.float32()))},
    )
    with pytest.raises(InputError, match="empty vectors"):
        read_table(empty, need_x=False)
    flags = write_raw(
        tmp_path / "b.parquet",
        {"label": pa.array([0, 1]), "old": pa.array([[True], [False]])},
    )
    with pytest.raises(InputError, match="not a list of floats"):
        read_table(flags, need_x=False)
