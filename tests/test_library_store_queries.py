"""The store's reads by asset id: they ask SQLite for the wanted rows only (every statement
names the ids, and SQLite finds them through the tables' asset_id keys), return what the
whole-table reads return for those assets, and take more ids than SQLite's host-parameter
limit."""

import random
import sqlite3

import numpy as np
import pytest

from core.library.store import AssetRecord, Library

DIM = 8


def fill(library: Library, count: int, bundle: str = "b1", seed: int = 0) -> list[int]:
    """`count` embedded assets with two tags and two captions each; their ids, ascending."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        vec = rng.normal(size=DIM).astype(np.float32)
        records.append(AssetRecord(f"/lib/asset_{i:04d}.glb", 100 + i, i, f"{i:064x}", vec / np.linalg.norm(vec), None))
    library.write_batch(bundle, "minilm", records, [], [])
    ids = sorted(library.assets())
    library.replace_labels("tags", "vocab", bundle, [(i, [(f"tag{i % 7}", 0.5 + (i % 5) / 10), ("box", 0.1)])
                                                     for i in ids])
    library.replace_labels("captions", "bank", bundle, [(i, [(f"caption {i}", 0.9), ("a thing", 0.2)]) for i in ids])
    return ids


@pytest.fixture
def library(tmp_path):
    with Library(tmp_path / "lib.sqlite") as library:
        yield library


def statements(library: Library) -> list[str]:
    """Every statement `library` runs from now on, with its parameters written in."""
    seen: list[str] = []
    library.conn.set_trace_callback(seen.append)
    return seen


def test_embeddings_by_id_are_the_wanted_rows_in_id_order(library):
    ids = fill(library, 40)
    all_ids, all_vectors = library.embeddings("b1")
    wanted = [ids[30], ids[3], 99_999, ids[3], np.int64(ids[17]), ids[0]]  # unknown, repeated, numpy ints
    got_ids, got_vectors = library.embeddings("b1", wanted)
    expected = sorted({ids[0], ids[3], ids[17], ids[30]})
    assert got_ids.dtype == np.int64 and got_vectors.dtype == np.float32
    assert got_ids.tolist() == expected
    rows = [all_ids.tolist().index(i) for i in expected]
    np.testing.assert_array_equal(got_vectors, all_vectors[rows])
    none_ids, none_vectors = library.embeddings("b1", [])
    assert none_ids.shape == (0,) and none_vectors.shape == (0, 0)
    assert library.embeddings("another-bundle", ids)[0].shape == (0,)


def test_embeddings_by_id_ask_sqlite_for_those_ids_only(library):
    ids = fill(library, 30)
    seen = statements(library)
    library.embeddings("b1", [ids[4], ids[9]])
    selects = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert selects and all(f"asset_id IN ({ids[4]},{ids[9]})" in s for s in selects), selects


def test_embeddings_by_id_take_more_ids_than_sqlites_variable_limit(library):
    ids = fill(library, 300)
    limit = 50
    library.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    wanted = ids[::2] + [10**9 + i for i in range(limit)]  # 150 known, 50 unknown: four times the limit
    random.Random(0).shuffle(wanted)
    with pytest.raises(sqlite3.OperationalError, match="too many SQL variables"):  # the limit is real
        library.conn.execute(f"SELECT 1 FROM embeddings WHERE asset_id IN ({','.join('?' * len(wanted))})", wanted)
    got_ids, got_vectors = library.embeddings("b1", wanted)
    assert got_ids.tolist() == sorted(ids[::2])
    all_ids, all_vectors = library.embeddings("b1")
    np.testing.assert_array_equal(got_vectors, all_vectors[::2])


def test_labels_of_some_assets_by_id_are_what_labels_holds_for_them(library):
    ids = fill(library, 60)
    library.replace_labels("tags", "other-vocab", "b2", [(ids[5], [("lamp", 0.9)])])  # another bundle's
    library.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 8)
    wanted = ids[5:40]
    for table in ("tags", "captions"):
        every = library.labels(table, "b1")
        assert library.labels(table, "b1", ids=wanted) == {i: every[i] for i in wanted}
        assert library.labels(table, "b1", ids=[10**9]) == {}
    assert library.labels("tags", "b2", ids=[ids[5], ids[6]]) == {ids[5]: [("lamp", 0.9)]}


def test_labels_by_id_of_one_asset_search_by_it(library):
    """SQLite's plan for the statement: a SEARCH through the table's (asset_id, ...) key,
    never a SCAN of every tag or caption."""
    ids = fill(library, 50)
    for table in ("tags", "captions"):
        seen = statements(library)
        labels = library.labels(table, "b1", ids=[ids[7]])
        library.conn.set_trace_callback(None)
        assert list(labels) == [ids[7]] and len(labels[ids[7]]) == 2
        selects = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) == 1 and f"asset_id IN ({ids[7]})" in selects[0]
        plan = " ".join(row[3] for row in library.conn.execute("EXPLAIN QUERY PLAN " + selects[0]))
        assert f"SEARCH {table}" in plan and "SCAN" not in plan, plan
