"""Library search, tags, captions and the command line over a real SQLite library indexed
with the session's tiny bundle (random weights). With random weights only what holds for
any encoder is checked: --like finds the identical mesh first, filters filter, tags and
captions are stored and exported; text ranking is checked on the minilm side alone."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from core.errors import SpaceError, VocabularyError
from core.library.ann import AnnIndex
from core.library.indexer import bundle_id
from core.library.search import SearchData, Searcher
from core.library.store import Library, LibraryError
from core.library.tagging import caption_library, tag_library
from core.spaces.ranking import nearest_texts
from core.spaces.vocabularies import load_vocabulary
from meshes import example_folders

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_bundle):
    """The three examples made here (chair, lamp, table) under props/ and a copy of the chair
    under other/, indexed."""
    root = example_folders(tmp_path_factory.mktemp("lib"))
    db = root / "lib.sqlite"
    assert main(["index", str(root / "props"), str(root / "other"), "--db", str(db),
                 "--bundle", str(tiny_bundle.path), "--quiet", "--workers", "0"]) == 0
    return root, db


def cli_json(capsys, *argv):
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_like_finds_the_identical_mesh_first(library, tiny_bundle, capsys):
    root, db = library
    out = cli_json(capsys, "search", "--like", str(root / "props" / "chair.glb"), "--db", str(db),
                   "--bundle", str(tiny_bundle.path))
    assert out["hits"][0]["path"] == str(root / "other" / "chair copy.glb")
    assert out["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert str(root / "props" / "chair.glb") not in [h["path"] for h in out["hits"]], "the example itself is left out"
    # A mesh outside the library is embedded on the fly.
    outside = root.parent / "outside.glb"
    shutil.copy(REPO / "examples" / "lamp.glb", outside)
    out = cli_json(capsys, "search", "--like", str(outside), "--db", str(db), "--bundle", str(tiny_bundle.path))
    assert out["hits"][0]["path"] == str(root / "props" / "lamp.glb")


def test_text_search_filters_and_table(library, tiny_bundle, capsys):
    root, db = library
    out = cli_json(capsys, "search", "a wooden chair", "--db", str(db), "--bundle", str(tiny_bundle.path))
    assert out["space"] == "minilm" and len(out["hits"]) == 4
    assert all(-1 <= h["score"] <= 1 for h in out["hits"])
    only_other = cli_json(capsys, "search", "a chair", "--folder", str(root / "other"), "--db", str(db),
                          "--bundle", str(tiny_bundle.path))
    assert [h["path"] for h in only_other["hits"]] == [str(root / "other" / "chair copy.glb")]
    assert cli_json(capsys, "search", "a chair", "--format", "obj", "--db", str(db),
                    "--bundle", str(tiny_bundle.path))["hits"] == []
    assert main(["search", "a chair", "--k", "2", "--db", str(db), "--bundle", str(tiny_bundle.path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["#", "score", "format", "path"] and len(table) == 3


def test_refusals(library, tiny_bundle, capsys):
    root, db = library
    with Library(db) as lib:
        searcher = Searcher(lib, tiny_bundle.bundle)
        with pytest.raises(SpaceError, match="not the bundle's space"):
            searcher.text_vector("a chair", space="openclip:ViT-B-32:none")
        with pytest.raises(SpaceError, match="image tower"):
            searcher.image_vector(root / "props" / "chair.glb")
    assert main(["search", "x", "--db", str(root / "missing.sqlite"), "--bundle", str(tiny_bundle.path)]) == 2
    assert "no library" in capsys.readouterr().err


def test_text_ranking_in_the_minilm_space():
    """What the text side of search does, with minilm's real weights: the nearest label wins."""
    from core.spaces import load_space

    space = load_space("minilm")
    labels = ["chair", "airplane", "banana"]
    query = space.embed_text(["a wooden chair with armrests"])
    assert nearest_texts(query, space.embed_prompts(labels), labels, k=1)[0][0][0] == "chair"


def test_tag_and_caption_are_stored_and_exported(library, tiny_bundle, tmp_path, capsys):
    root, db = library
    # A user vocabulary (a shipped one costs 64 prompts a label through minilm: too slow here).
    vocab = tmp_path / "labels.txt"
    vocab.write_text("chair\nlamp\ntable\nbanana\n")
    out = cli_json(capsys, "tag", "--vocab", str(vocab), "--k", "3", "--threshold", "-1", "--db", str(db),
                   "--bundle", str(tiny_bundle.path), "--export", str(tmp_path / "tags.csv"))
    assert out["source"] == str(vocab.resolve()) and len(out["assets"]) == 4
    first = next(iter(out["assets"].values()))
    assert len(first) == 3 and first[0]["score"] >= first[1]["score"] >= first[2]["score"]
    assert first[0]["tag"] in {"chair", "lamp", "table", "banana"}
    csv_lines = (tmp_path / "tags.csv").read_text().splitlines()
    assert csv_lines[0] == "path,rank,tag,score" and len(csv_lines) == 1 + 4 * 3

    # Stored tags filter searches; a threshold above every score keeps none.
    chair_tag = out["assets"][str(root / "props" / "chair.glb")][0]["tag"]
    tagged = cli_json(capsys, "search", "x", "--tag", chair_tag, "--db", str(db), "--bundle", str(tiny_bundle.path))
    assert str(root / "props" / "chair.glb") in [h["path"] for h in tagged["hits"]]
    with Library(db) as lib:
        _, none = tag_library(lib, tiny_bundle.bundle, vocab, k=3, threshold=1.01)
        assert all(rows == [] for rows in none.values())

    bank = tmp_path / "bank.txt"
    bank.write_text("# my captions\na red chair\na tall lamp\na low table\n")
    out = cli_json(capsys, "caption", "--bank", str(bank), "--k", "2", "--db", str(db),
                   "--bundle", str(tiny_bundle.path), "--export", str(tmp_path / "captions.json"))
    rows = out["assets"][str(root / "props" / "lamp.glb")]
    assert len(rows) == 2 and {r["caption"] for r in rows} <= {"a red chair", "a tall lamp", "a low table"}
    assert json.loads((tmp_path / "captions.json").read_text()).keys() == out["assets"].keys()
    with Library(db) as lib:
        _, shipped = caption_library(lib, tiny_bundle.bundle, k=1)
        assert len(shipped) == 4 and all(len(r) == 1 for r in shipped.values())
        stored = lib.labels("captions", bundle_id(tiny_bundle.bundle), str(bank.resolve()))
        assert [t for t, _ in stored[lib.asset_id(str(root / "props" / "lamp.glb"))]] == [r["caption"] for r in rows]


def test_shipped_vocabularies():
    sizes = {name: len(load_vocabulary(name)[1]) for name in ("lvis", "modelnet40", "shapenet55")}
    assert sizes == {"lvis": 1156, "modelnet40": 40, "shapenet55": 55}
    with pytest.raises(VocabularyError, match="shipped one"):
        load_vocabulary("no-such-vocabulary")


def test_ann_path_agrees_with_exact(library, tiny_bundle):
    """Forcing the ANN path on a tiny library: same top hit as exact, index file reused, rebuilt when stale."""
    root, db = library
    with Library(db) as lib:
        exact = Searcher(lib, tiny_bundle.bundle)
        ann = Searcher(lib, tiny_bundle.bundle, ann_min_assets=1)
        query, example = exact.like_vector(root / "props" / "table.glb")
        assert [h.path for h in ann.search(query, 2, exclude=example)] == [h.path for h in exact.search(query, 2, exclude=example)]
        path = AnnIndex.path_for(lib, ann.bundle_id)
        assert path.is_file()
        built = path.stat().st_mtime_ns
        path.with_suffix(".json").write_text("not a stamp")  # any read of the file now rebuilds it
        assert ann.search(query, 1)[0].path == exact.search(query, 1)[0].path
        assert path.stat().st_mtime_ns == built, "the index read once is searched again, not read again"
        assert Searcher(lib, tiny_bundle.bundle, ann_min_assets=1).search(query, 1)
        assert path.stat().st_mtime_ns != built, "a new searcher reads it, and rebuilds a bad stamp's"
        built = path.stat().st_mtime_ns
        Searcher(lib, tiny_bundle.bundle, ann_min_assets=1).search(query, 1)
        assert path.stat().st_mtime_ns == built, "an up-to-date index is reused"
        shared = SearchData()  # as a server's readers share it
        Searcher(lib, tiny_bundle.bundle, ann_min_assets=1, data=shared).search(query, 1)
        path.with_suffix(".json").write_text("not a stamp")
        other = Searcher(lib, tiny_bundle.bundle, ann_min_assets=1, data=shared)
        assert other.search(query, 1)[0].path == exact.search(query, 1)[0].path
        assert path.stat().st_mtime_ns == built, "a Searcher sharing the data reads no index of its own"
        lib.set_meta(f"generation:{ann.bundle_id}", "999")
        ann.search(query, 1)
        assert path.stat().st_mtime_ns != built, "a stale index is rebuilt"


def test_vectors_of_the_library_are_unit_norm(library, tiny_bundle):
    _, db = library
    with Library(db) as lib:
        _, vectors = lib.embeddings(bundle_id(tiny_bundle.bundle))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["a chair", "--k", "-3"], "-3 is below 1"),
    (["a chair", "--k", "0"], "0 is below 1"),
    (["a chair", "--k", "ten"], "'ten' is not a whole number"),
    (["a chair", "--format", "xyz"], "'xyz' is not a format ulip2 indexes; choose from"),
])
def test_bad_search_arguments_are_refused_by_name(argv, message, capsys):
    """Tried as a new user would: a negative or zero count, or an unknown format, is one
    line naming the argument, exit 2, before any library is opened."""
    with pytest.raises(SystemExit) as exit_info:
        main(["search", *argv, "--db", "/nonexistent/lib.sqlite"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_empty_text_query_is_refused(library, capsys):
    root, db = library
    assert main(["search", "  ", "--db", str(db)]) == 2
    assert "the query is empty" in capsys.readouterr().err


def test_format_filter_takes_a_dot_and_capitals(library, tiny_bundle, capsys):
    root, db = library
    out = cli_json(capsys, "search", "a chair", "--format", ".GLB", "--db", str(db), "--bundle", str(tiny_bundle.path))
    assert out["hits"] and all(h["format"] == "glb" for h in out["hits"])


def unprivileged(argv: list[str]) -> list[str]:
    """argv run where a folder's permissions bind. Root writes through any chmod, so as root
    it runs in a user namespace of its own, where root's files keep their owner's permission
    bits and lose root's override (the kernel's view of a read-only share)."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--user", "true"]).returncode != 0:
        pytest.skip("running as root, which writes through any chmod, and `unshare --user` is not allowed here: "
                    "no way to make a folder read-only for this test")
    return ["unshare", "--user", *argv]


@pytest.fixture
def share(library, tmp_path):
    """A copy of the library in a folder then made read-only, as a share mounted read-only is."""
    folder = tmp_path / "share"
    folder.mkdir()
    shutil.copy(library[1], folder / "lib.sqlite")
    yield folder
    folder.chmod(0o755)  # so pytest can clear it away


def read_only(folder: Path) -> dict[str, bytes]:
    """Make `folder` and its files read-only; what they hold."""
    for path in folder.iterdir():
        path.chmod(0o444)
    folder.chmod(0o555)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def ulip2(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(unprivileged([sys.executable, "-m", "cli", *argv]), cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_a_library_on_a_read_only_share_is_searched_and_left_as_it_was(library, share, tiny_bundle):
    """Tried as a studio would: every command on a library in a read-only folder said 'not a
    ulip2 library or corrupt (unable to open database file)'. Searches read it, exactly and
    through the ANN index (built, not saved), and write nothing; a writing command is one
    line naming the folder, exit 1."""
    root, _ = library
    before = read_only(share)
    db, chair = str(share / "lib.sqlite"), str(root / "props" / "chair.glb")
    found = ulip2("search", "--like", chair, "--db", db, "--bundle", str(tiny_bundle.path), "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["hits"][0]["path"] == str(root / "other" / "chair copy.glb")
    ann = subprocess.run(unprivileged([sys.executable, "-c", (
        "import sys; from core.library.search import Searcher; from core.library.store import Library\n"
        "with Library(sys.argv[1], read_only=True) as library:\n"
        "    searcher = Searcher(library, sys.argv[2], ann_min_assets=1)\n"
        "    print(*sorted(h.path for h in searcher.search(searcher.like_vector(sys.argv[3])[0], 2)), sep='\\n')"),
        db, str(tiny_bundle.path), chair]), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ann.returncode == 0, ann.stderr
    assert ann.stdout.splitlines() == [str(root / "other" / "chair copy.glb"), chair], "the chair and its copy"

    refused = ulip2("index", str(root / "props"), "--db", db, "--bundle", str(tiny_bundle.path), "--quiet")
    assert refused.returncode == 1
    assert [line for line in refused.stderr.splitlines() if line.startswith("error")] == [
        f"error: {share}: not writable, and this command writes the library lib.sqlite; "
        "check the path and that it is writable"]
    assert {p.name: p.read_bytes() for p in share.iterdir()} == before, "nothing written, no -wal or -shm made"


def test_a_read_only_library_with_changes_in_its_wal_file_says_how_to_fold_them_in(library, share, tiny_bundle):
    """A copy taken while an index run was writing carries a -wal file; in a read-only folder
    SQLite cannot read it (it needs the -shm beside it), and the library file alone lacks
    those changes: refused by name, with the fix."""
    root, _ = library
    with Library(share / "lib.sqlite") as writing:
        writing.set_user_tags(writing.asset_id(str(root / "props" / "lamp.glb")), ["hero prop"])
        taken = share.parent / "taken"
        taken.mkdir()
        for name in ("lib.sqlite", "lib.sqlite-wal"):
            shutil.copy(share / name, taken / name)
    assert (taken / "lib.sqlite-wal").stat().st_size > 0
    read_only(taken)
    try:
        out = ulip2("search", "--like", str(root / "props" / "chair.glb"), "--db", str(taken / "lib.sqlite"),
                    "--bundle", str(tiny_bundle.path))
    finally:
        taken.chmod(0o755)
    assert out.returncode == 2
    assert f"error: {taken / 'lib.sqlite-wal'}: holds changes not yet in the library" in out.stderr
    assert "PRAGMA wal_checkpoint(TRUNCATE)" in out.stderr


def test_an_older_library_on_a_read_only_share_says_it_needs_upgrading_where_writable(library, share, tiny_bundle):
    """Reading an older library upgrades it first, which a read-only folder forbids: one line
    saying so, the library left as it was."""
    conn = sqlite3.connect(share / "lib.sqlite")  # version 4: errors had no fault column
    conn.execute("ALTER TABLE errors DROP COLUMN fault")
    conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = read_only(share)
    out = ulip2("search", "--like", str(library[0] / "props" / "chair.glb"), "--db", str(share / "lib.sqlite"),
                "--bundle", str(tiny_bundle.path))
    assert out.returncode == 2
    assert (f"error: {share / 'lib.sqlite'}: the library is of schema 4, this ulip2 reads 5, and upgrading it "
            f"writes it, but {share} is not writable") in out.stderr
    assert {p.name: p.read_bytes() for p in share.iterdir()} == before
