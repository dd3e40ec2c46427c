"""`ulip2 serve` against a real uvicorn server on loopback, with urllib as the client, over a
real SQLite library indexed with the session's tiny bundle (random weights: only what holds
for any encoder is checked, e.g. an identical mesh is the nearest, and hits are what core's
Searcher returns). Every refusal must be a 4xx JSON body {"error": ...}, never a traceback."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from cli.main import main  # noqa: E402
from core import __version__  # noqa: E402
from core.library.indexer import bundle_id, index_paths  # noqa: E402
from core.library.search import Searcher  # noqa: E402
from core.library.store import Library  # noqa: E402
from core.runtime import PointEncoder  # noqa: E402
from meshes import example_folders  # noqa: E402
from serve import limits  # noqa: E402
from serve.app import ROUTES, create_app  # noqa: E402
from serve.hosts import LOOPBACK_NAMES, is_loopback, listen, url  # noqa: E402
from served import serving  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOKEN = "t0ken-for-tests"
SECRET = "TOP-SECRET-NOT-A-RECORD"


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_bundle):
    """props/ (chair, lamp, table) and other/chair copy.glb indexed with point previews;
    bare/lamp bare.glb indexed without a thumbnail; a file beside them that no route may serve."""
    root = example_folders(tmp_path_factory.mktemp("served"))
    (root / "bare").mkdir()
    shutil.copy(REPO / "examples" / "lamp.glb", root / "bare" / "lamp bare.glb")
    (root / "secret.txt").write_text(SECRET)
    db = root / "lib.sqlite"
    encoder = PointEncoder(tiny_bundle.bundle, device="cpu")
    with Library(db) as lib:
        index_paths([root / "props", root / "other"], lib, encoder, workers=0)
        index_paths([root / "bare"], lib, encoder, workers=0, thumbnails=False)
        ids = {Path(row["path"]).relative_to(root).as_posix(): i for i, row in lib.assets().items()}
    assert len(ids) == 5
    return root, db, ids


@pytest.fixture(scope="module")
def server(library, tiny_bundle):
    """A server that takes writes with TOKEN, answering loopback names only."""
    _, db, _ = library
    with serving(create_app(db, tiny_bundle.bundle, token=TOKEN, allowed_hosts=LOOPBACK_NAMES)) as base:
        yield base


@pytest.fixture(scope="module")
def no_token_server(library, tiny_bundle):
    _, db, _ = library
    with serving(create_app(db, tiny_bundle.bundle, readers=2)) as base:
        yield base


def call(base, path, *, method="GET", body=None, headers=None):
    """(status, headers, body: parsed JSON, else bytes)."""
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(base + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, got, data = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, got, data = exc.code, exc.headers, exc.read()
    if got.get("content-type", "").startswith("application/json"):
        return status, got, json.loads(data)
    return status, got, data


def authorised(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def assert_json_error(status, headers, body, expected):
    assert status == expected, (status, body)
    assert headers["content-type"].startswith("application/json"), body
    assert isinstance(body, dict) and set(body) == {"error"} and body["error"], body
    assert "Traceback" not in body["error"] and SECRET not in body["error"]


# -- reads -----------------------------------------------------------------------------------

def test_status(server, library, tiny_bundle):
    root, db, _ = library
    status, _, body = call(server, "/v1/status")
    assert status == 200
    assert body["library"] == "lib.sqlite" and str(root) not in json.dumps(body), "the file's name, not its path"
    assert (body["assets"], body["embedded"], body["thumbnails"], body["errors"]) == (5, 5, 4, 0)
    assert body["bundle"] == {"id": bundle_id(tiny_bundle.bundle), "space": "minilm", "dim": 384}
    assert body["version"] == __version__ and body["writes"] == "token"
    with Library(db, read_only=True) as lib:
        last = max(r[0] for r in lib.conn.execute("SELECT indexed_at FROM assets"))
    assert abs(datetime.fromisoformat(body["last_indexed"]).timestamp() - last) < 1


def test_text_search_is_the_searchers(server, library, tiny_bundle):
    root, db, ids = library
    status, _, body = call(server, "/v1/search?q=a+wooden+chair&k=3")
    assert status == 200 and body["query"] == "a wooden chair" and body["k"] == 3 and body["space"] == "minilm"
    hits = body["hits"]
    assert len(hits) == 3 and all({"asset_id", "path", "format", "score"} <= set(h) for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    with Library(db, read_only=True) as lib:
        searcher = Searcher(lib, tiny_bundle.bundle)
        expected = searcher.search(searcher.text_vector("a wooden chair"), 3)
    assert [(h["asset_id"], h["path"]) for h in hits] == [(h.asset_id, h.path) for h in expected]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected], abs=1e-5)

    assert len(call(server, "/v1/search?q=chair")[2]["hits"]) == 5, "k defaults to 10: every asset"
    folder = urllib.parse.quote(str(root / "other"))
    only_other = call(server, f"/v1/search?q=chair&folder={folder}")[2]["hits"]
    assert [h["asset_id"] for h in only_other] == [ids["other/chair copy.glb"]]
    assert call(server, "/v1/search?q=chair&format=obj")[2]["hits"] == []
    assert len(call(server, "/v1/search?q=chair&format=glb&format=obj&k=200")[2]["hits"]) == 5


def test_like_leaves_the_asset_itself_out(server, library):
    _, _, ids = library
    chair = ids["props/chair.glb"]
    status, _, body = call(server, f"/v1/like/{chair}?k=4")
    assert status == 200 and body["like"] == chair and len(body["hits"]) == 4
    assert chair not in [h["asset_id"] for h in body["hits"]]
    assert body["hits"][0]["asset_id"] == ids["other/chair copy.glb"], "the identical mesh first"
    assert body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert_json_error(*call(server, "/v1/like/987654"), 404)


def test_search_by_an_uploaded_mesh(server, library):
    """The upload is sampled and embedded as the index did the same file, so the chairs it
    holds come first at cosine 1; the filters hold as for text."""
    root, _, ids = library
    data = (REPO / "examples" / "chair.glb").read_bytes()
    status, _, body = call(server, "/v1/search/mesh?type=glb&k=5", method="POST", body=data,
                           headers={"Content-Type": "application/octet-stream"})
    assert status == 200 and body["mesh"] == "glb" and len(body["hits"]) == 5
    first_two = {h["asset_id"] for h in body["hits"][:2]}
    assert first_two == {ids["props/chair.glb"], ids["other/chair copy.glb"]}
    assert [h["score"] for h in body["hits"][:2]] == pytest.approx([1.0, 1.0], abs=1e-4)
    _, _, liked = call(server, f"/v1/like/{ids['props/chair.glb']}?k=4")
    # like leaves the chair out and puts its copy first; then both rank the rest alike
    assert [h["asset_id"] for h in body["hits"][2:]] == [h["asset_id"] for h in liked["hits"][1:]]
    folder = urllib.parse.quote(str(root / "props"))
    _, _, only_props = call(server, f"/v1/search/mesh?type=GLB&folder={folder}", method="POST", body=data)
    assert [h["asset_id"] for h in only_props["hits"]][0] == ids["props/chair.glb"]
    assert len(only_props["hits"]) == 3


def test_asset_details_and_thumbnails(server, library):
    root, db, ids = library
    chair, bare = ids["props/chair.glb"], ids["bare/lamp bare.glb"]
    status, _, body = call(server, f"/v1/assets/{chair}")
    assert status == 200
    assert body["asset_id"] == chair and body["path"] == str(root / "props" / "chair.glb")
    assert (body["format"], body["object"], body["embedded"], body["has_thumbnail"]) == ("glb", "", True, True)
    assert body["thumbnail_source"] == "points" and isinstance(body["user_tags"], list)

    status, headers, png = call(server, f"/v1/assets/{chair}/thumbnail")
    with Library(db, read_only=True) as lib:
        assert status == 200 and headers["content-type"] == "image/png" and png == lib.thumbnail(chair)
    assert png.startswith(b"\x89PNG")

    assert call(server, f"/v1/assets/{bare}")[2]["has_thumbnail"] is False
    status, headers, body = call(server, f"/v1/assets/{bare}/thumbnail")
    assert_json_error(status, headers, body, 404)
    assert "no thumbnail" in body["error"]


def test_openapi_names_every_route(server):
    status, _, doc = call(server, "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    served = {(route.path, method.lower()) for route in ROUTES if route.include_in_schema
              for method in route.methods - {"HEAD"}}
    documented = {(path, method) for path, methods in doc["paths"].items() for method in methods}
    assert documented == served
    k = next(p for p in doc["paths"]["/v1/search"]["get"]["parameters"] if p["name"] == "k")
    assert k["schema"]["maximum"] == limits.MAX_K


def test_the_web_page_is_served_from_fixed_routes_under_a_strict_policy(server):
    """tests/test_web_page.py drives the page in a browser; here, what any client sees."""
    status, headers, body = call(server, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script src="/page.js"' in body and b"<script>" not in body  # no inline script
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
    for path, kind in (("/page.js", "text/javascript"), ("/page.css", "text/css"), ("/icon.svg", "image/svg+xml")):
        status, headers, body = call(server, path)
        assert status == 200 and headers["content-type"].startswith(kind) and body
        assert headers["x-content-type-options"] == "nosniff"
    assert b"innerHTML" not in call(server, "/page.js")[2]  # records are set as text
    for path in ("/index.html", "/web/page.js", "/page.js/..%2fapp.py", "/../serve/app.py"):
        status, headers, body = call(server, path)
        assert_json_error(status, headers, body, 404)


# -- writes ----------------------------------------------------------------------------------

def test_tags_written_with_the_token(server, library):
    _, db, ids = library
    table = ids["props/table.glb"]
    status, _, body = call(server, f"/v1/assets/{table}/tags", method="PUT",
                           body={"tags": ["oak", " dining table ", "oak"]}, headers=authorised())
    assert status == 200 and body == {"asset_id": table, "user_tags": ["dining table", "oak"]}
    assert call(server, f"/v1/assets/{table}")[2]["user_tags"] == ["dining table", "oak"]
    with Library(db, read_only=True) as lib:
        assert lib.user_tags([table]) == {table: ["dining table", "oak"]}
    tagged = call(server, "/v1/search?q=furniture&tag=oak")[2]["hits"]
    assert [h["asset_id"] for h in tagged] == [table]

    assert call(server, f"/v1/assets/{table}/tags", method="PUT", body={"tags": []},
                headers=authorised())[2]["user_tags"] == []
    assert call(server, f"/v1/assets/{table}")[2]["user_tags"] == []
    assert_json_error(*call(server, "/v1/assets/987654/tags", method="PUT", body={"tags": ["x"]},
                            headers=authorised()), 404)


def test_writes_refused_without_the_token(server, no_token_server, library):
    _, db, ids = library
    lamp = ids["props/lamp.glb"]
    for headers in ({}, authorised("wrong"), {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        status, got, body = call(server, f"/v1/assets/{lamp}/tags", method="PUT", body={"tags": ["x"]},
                                 headers=headers)
        assert_json_error(status, got, body, 401)
        assert got["www-authenticate"].startswith("Bearer")
    status, got, body = call(no_token_server, f"/v1/assets/{lamp}/tags", method="PUT", body={"tags": ["x"]},
                             headers=authorised())
    assert_json_error(status, got, body, 403)
    assert "--token-file" in body["error"]
    assert call(no_token_server, "/v1/status")[2]["writes"] == "off"
    with Library(db, read_only=True) as lib:
        assert lib.user_tags([lamp]) == {}


# -- hostile requests ------------------------------------------------------------------------

def test_hostile_requests_are_json_errors(server, library):
    _, _, ids = library
    tags = f"/v1/assets/{ids['props/lamp.glb']}/tags"
    put = {"method": "PUT", "headers": {**authorised(), "Content-Type": "application/json"}}
    big = json.dumps({"tags": ["x" * 50] * 2000}).encode()
    assert len(big) > limits.MAX_BODY_BYTES
    cases = [
        (413, tags, dict(put, body=big)),
        (413, tags, dict(put, body=iter([big[:40_000], big[40_000:]]))),  # chunked: no Content-Length
        (400, tags, dict(put, body=b'{"tags": ["oak"')),
        (400, tags, dict(put, body=b"\xff\xfe not text")),
        (400, tags, dict(put, body=b'{"tags": "oak"}')),
        (400, tags, dict(put, body=b'{"tags": [1, 2]}')),
        (400, tags, dict(put, body=b'["oak"]')),
        (400, tags, dict(put, body=b'{"tags": ["oak"], "extra": 1}')),
        (400, tags, dict(put, body=json.dumps({"tags": ["t"] * (limits.MAX_TAGS + 1)}).encode())),
        (400, tags, dict(put, body=json.dumps({"tags": ["x" * (limits.MAX_TAG_CHARS + 1)]}).encode())),
        (400, tags, dict(put, body=json.dumps({"tags": ["a\u0000b"]}).encode())),
        (400, tags, dict(put, body=json.dumps({"tags": ["  "]}).encode())),
        (415, tags, dict(put, body=b"tags=oak", headers={**authorised(), "Content-Type": "text/plain"})),
        (404, "/v1/assets/../secret.txt", {}),
        (404, "/v1/assets/..%2Fsecret.txt/thumbnail", {}),
        (404, "/v1/assets/%2E%2E/thumbnail", {}),
        (404, "/v1/like/..%2F..%2Fsecret.txt", {}),
        (404, "/v1/assets/987654", {}),
        (404, "/v1/assets/987654/thumbnail", {}),
        (404, f"/v1/assets/{10**30}", {}),
        (404, "/v1/assets/-1", {}),
        (404, "/v1/nothing-here", {}),
        (404, "/secret.txt", {}),
        (400, "/v1/search?q=chair&k=0", {}),
        (400, f"/v1/search?q=chair&k={10**9}", {}),
        (400, "/v1/search?q=chair&k=ten", {}),
        (400, "/v1/search?q=chair&k=1&k=2", {}),
        (400, "/v1/search", {}),
        (400, "/v1/search?q=", {}),
        (400, "/v1/search?q=" + "a" * (limits.MAX_QUERY_CHARS + 1), {}),
        (400, "/v1/search?q=chair&formt=glb", {}),
        (400, "/v1/search?q=chair&format=exe", {}),
        (400, "/v1/search?q=chair&folder=props", {}),
        (400, "/v1/like/1?q=chair", {}),
        (405, "/v1/search?q=chair", {"method": "POST", "body": b"{}"}),
        (405, tags, {"method": "DELETE"}),
        (405, "/v1/status", {"method": "PUT", "body": b"{}"}),
        (400, "/v1/status", {"headers": {"Host": "evil.example"}}),
        (400, "/v1/search/mesh", {"method": "POST", "body": b"glTF"}),
        (400, "/v1/search/mesh?type=glb", {"method": "POST", "body": b""}),
        (415, "/v1/search/mesh?type=blend", {"method": "POST", "body": b"BLENDER"}),
        (415, "/v1/search/mesh?type=../../secret.txt", {"method": "POST", "body": b"x"}),
        (415, "/v1/search/mesh?type=exe", {"method": "POST", "body": b"MZ"}),
        (422, "/v1/search/mesh?type=glb", {"method": "POST", "body": b"glTF not really a binary glTF"}),
        (422, "/v1/search/mesh?type=obj", {"method": "POST", "body": b"v 1 2\nf 1 2 3 9\n"}),
        (422, "/v1/search/mesh?type=stl", {"method": "POST", "body": b"\0" * 84}),
        (405, "/v1/search/mesh?type=glb", {}),
        (409, "/v1/search/image", {"method": "POST", "body": b"\x89PNG"}),  # minilm has no image tower
    ]
    for expected, path, kw in cases:
        status, headers, body = call(server, path, **kw)
        assert_json_error(status, headers, body, expected)
        if expected == 405:
            assert headers["allow"], "a 405 says what the route takes"
    # Nothing was written by any of them.
    assert call(server, f"/v1/assets/{ids['props/lamp.glb']}")[2]["user_tags"] == []


@pytest.fixture(scope="module")
def image_server(tmp_path_factory):
    """A server over three meshes indexed with a pointbert-tiny bundle in a tiny open_clip
    space, both with random weights: images reach core's image search; meaning is not checked."""
    import open_clip

    from core.export import export_bundle
    from core.models import create_encoder
    from meshes import write_meshes

    root = tmp_path_factory.mktemp("clip")
    config = root / "ulip2-serve-tiny-vit.json"
    config.write_text(json.dumps({
        "embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(config)
    bundle = export_bundle(root / "bundle", model=create_encoder("pointbert-tiny", embed_dim=32, seed=0).eval(),
                           space="openclip:ulip2-serve-tiny-vit:none")
    write_meshes(root / "assets", 3)
    db = root / "lib.sqlite"
    with Library(db) as lib:
        index_paths([root / "assets"], lib, PointEncoder(bundle, device="cpu"), workers=0)
    with serving(create_app(db, bundle, warm=False)) as base:
        yield base, db, bundle


def png(width=40, height=30) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, "PNG")
    return out.getvalue()


def test_search_by_an_uploaded_image_where_the_space_has_an_image_tower(image_server, monkeypatch, tmp_path):
    base, db, bundle = image_server
    status, _, body = call(base, "/v1/search/image?k=3", method="POST", body=png())
    assert status == 200 and body["image"] is True and body["space"] == bundle.space
    photo = tmp_path / "photo.png"
    photo.write_bytes(png())
    with Library(db, read_only=True) as lib:
        searcher = Searcher(lib, bundle)
        expected = searcher.search(searcher.image_vector(photo), 3)
    assert [h["asset_id"] for h in body["hits"]] == [h.asset_id for h in expected]
    assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in expected], abs=1e-5)

    from core.library.client import LibraryClient

    assert [h["asset_id"] for h in LibraryClient(base).search_image(photo, k=3)] == [h.asset_id for h in expected]
    for body, expected_status in ((b"not an image", 422), (png()[:30], 422), (b"", 400)):
        status, headers, reply = call(base, "/v1/search/image", method="POST", body=body)
        assert_json_error(status, headers, reply, expected_status)
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 40 * 30 - 1)  # the server runs in this process
    status, headers, reply = call(base, "/v1/search/image", method="POST", body=png())
    assert_json_error(status, headers, reply, 413)
    assert "40 x 30 pixels" in reply["error"]


def test_an_upload_past_the_bound_is_refused_before_and_while_it_is_read(server, monkeypatch):
    data = (REPO / "examples" / "chair.glb").read_bytes()
    monkeypatch.setattr(limits, "MAX_MESH_BYTES", len(data) - 1)  # the server runs in this process
    for body in (data, iter([data[:1000], data[1000:]])):  # with a Content-Length, then chunked
        status, headers, reply = call(server, "/v1/search/mesh?type=glb", method="POST", body=body)
        assert_json_error(status, headers, reply, 413)
    monkeypatch.setattr(limits, "MAX_MESH_BYTES", len(data))
    assert call(server, "/v1/search/mesh?type=glb", method="POST", body=data)[0] == 200
    status, _, reply = call(server, "/v1/search/mesh?type=glb", method="POST", body=b"glTF" + b"\0" * 40)
    assert status == 422 and "ulip2-upload" not in reply["error"] and "uploaded .glb" in reply["error"]


def test_reads_in_parallel_beside_writes(server, library):
    """Searches from many threads at once while tags are written: every answer is whole."""
    _, _, ids = library
    chair, table = ids["props/chair.glb"], ids["props/table.glb"]
    expected = call(server, f"/v1/like/{chair}")[2]["hits"]

    def read(i):
        return call(server, f"/v1/like/{chair}")[2]["hits"] if i % 2 else call(server, "/v1/search?q=a+lamp")[0]

    def write(i):
        return call(server, f"/v1/assets/{table}/tags", method="PUT", body={"tags": [f"tag{i}"]},
                    headers=authorised())[0]

    with ThreadPoolExecutor(12) as pool:
        reads = [pool.submit(read, i) for i in range(40)]
        writes = [pool.submit(write, i) for i in range(10)]
        answers = [f.result() for f in reads]
        assert [f.result() for f in writes] == [200] * 10
    assert all(a == expected if i % 2 else a == 200 for i, a in enumerate(answers))
    assert len(call(server, f"/v1/assets/{table}")[2]["user_tags"]) == 1, "writes queue: one set won"
    call(server, f"/v1/assets/{table}/tags", method="PUT", body={"tags": []}, headers=authorised())


# -- the pieces serve adds to core -------------------------------------------------------------

def test_asset_vector_and_counts(library, tiny_bundle):
    _, db, ids = library
    with Library(db, read_only=True) as lib:
        searcher = Searcher(lib, tiny_bundle.bundle)
        chair = ids["props/chair.glb"]
        _, vectors = lib.embeddings(searcher.bundle_id, [chair])
        assert np.array_equal(searcher.asset_vector(chair), vectors[0])
        assert searcher.asset_vector(987654) is None
        counts = lib.counts()
    assert (counts["assets"], counts["thumbnails"], counts["errors"]) == (5, 4, 0)
    assert counts["last_indexed_at"] <= time.time()


def test_loopback_names():
    assert all(map(is_loopback, ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "192.168.1.20", "studio-server")))


def test_a_library_without_the_bundle_is_refused_at_start(tmp_path, tiny_bundle):
    from core.errors import Ulip2Error

    with Library(tmp_path / "empty.sqlite"):
        pass
    with pytest.raises(Ulip2Error, match="no embeddings from bundle"):
        create_app(tmp_path / "empty.sqlite", tiny_bundle.bundle)
    with pytest.raises(Ulip2Error, match="no library"):
        create_app(tmp_path / "missing.sqlite", tiny_bundle.bundle)


# -- the command -----------------------------------------------------------------------------

def test_serve_help_teaches(capsys):
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--token-file" in out and "curl" in out and "127.0.0.1" in out


@pytest.mark.parametrize("content", [None, "", "  \n", "two words\n"])
def test_a_bad_token_file_is_one_line(tmp_path, library, capsys, content):
    _, db, _ = library
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    assert main(["serve", "--db", str(db), "--token-file", str(token)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(token) in err[0] and "token" in err[0]


def test_ulip2_serve_runs_and_stops(tmp_path, library, tiny_bundle):
    """The command itself, in a process: it prints its URL, answers, and stops on Ctrl-C."""
    _, db, _ = library
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--db", str(db), "--bundle", str(tiny_bundle.path),
         "--port", "0", "--token-file", str(token), "--quiet"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving lib.sqlite at http://127.0.0.1:"), (line, process.stderr.read())
        base = line.split(" at ")[1].split("/v1/")[0]
        status, _, body = call(base, "/v1/status")
        assert status == 200 and body["writes"] == "token"
        assert_json_error(*call(base, "/v1/status", headers={"Host": "evil.example"}), 400)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
    err = process.stderr.read()
    assert process.returncode == 0 and err.rstrip().endswith("stopped"), err


@pytest.mark.crash
def test_a_server_killed_mid_write_loses_no_committed_tag(tmp_path, library, tiny_bundle):
    """kill -9 of `ulip2 serve` while three clients rewrite tags: every write it answered 200
    is in the library afterwards (or the one its client sent next, committed but not yet
    answered), and the library file is whole."""
    _, db, ids = library
    own = tmp_path / "lib.sqlite"
    with Library(db, read_only=True) as lib:  # a copy of the module's library, consistent
        lib.conn.execute("VACUUM INTO ?", (str(own),))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--db", str(own), "--bundle", str(tiny_bundle.path),
         "--port", "0", "--token-file", str(token), "--quiet"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    targets = sorted(ids.values())[:3]
    answered = {asset: -1 for asset in targets}  # the last take each client saw answered 200
    stop = threading.Event()

    def rewrite(asset: int) -> None:
        take = 0
        while not stop.is_set():
            try:
                status, _, _ = call(base, f"/v1/assets/{asset}/tags", method="PUT",
                                    body={"tags": [f"take-{take}"]}, headers=authorised())
            except OSError:  # the server is gone
                return
            assert status == 200
            answered[asset] = take
            take += 1

    try:
        line = process.stdout.readline()
        assert line.startswith("serving lib.sqlite at "), (line, process.stderr.read())
        base = line.split(" at ")[1].split("/v1/")[0]
        clients = [threading.Thread(target=rewrite, args=(asset,)) for asset in targets]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 60
        while min(answered.values()) < 10:
            assert time.monotonic() < deadline, f"too few writes answered: {answered}"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=20)
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
    for client in clients:
        client.join(30)
    with Library(own, read_only=True) as lib:
        assert lib.integrity_check() == "ok"
        stored = lib.user_tags(targets)
    for asset, take in answered.items():
        assert stored[asset] in ([f"take-{take}"], [f"take-{take + 1}"]), (asset, take, stored[asset])


# -- the client module ---------------------------------------------------------------------

def test_the_client_reads_what_the_server_serves_with_paths_mapped(server, library):
    """core.library.client against the real server: the same hits as the routes, each with
    its path as a Windows machine mounting the share at S:\\assets reaches it."""
    from core.library.client import LibraryClient, PathMap

    root, _, ids = library
    client = LibraryClient(server + "/", paths=PathMap.parse(f"{root}=S:\\assets"))
    _, _, served = call(server, "/v1/search?q=a+chair&k=3")
    hits = client.search("a chair", k=3)
    assert [{k: v for k, v in h.items() if k != "local_path"} for h in hits] == served["hits"]
    chair = next(h for h in hits if h["asset_id"] == ids["props/chair.glb"])
    assert chair["local_path"] == "S:\\assets\\props\\chair.glb"
    assert ids["props/lamp.glb"] not in [h["asset_id"] for h in client.like(ids["props/lamp.glb"], k=4)]
    assert client.asset(ids["other/chair copy.glb"])["local_path"] == "S:\\assets\\other\\chair copy.glb"
    assert client.thumbnail(ids["props/chair.glb"]).startswith(b"\x89PNG")
    assert client.thumbnail(ids["bare/lamp bare.glb"]) is None
    assert client.status()["assets"] == 5
    sent = client.search_mesh(REPO / "examples" / "chair.glb", k=2)
    assert {h["local_path"] for h in sent} == {"S:\\assets\\props\\chair.glb", "S:\\assets\\other\\chair copy.glb"}


def test_the_client_writes_tags_with_the_token_and_says_why_not(server, library):
    from core.library.client import ClientError, LibraryClient

    _, _, ids = library
    asset = ids["props/table.glb"]
    assert LibraryClient(server, token=TOKEN).set_tags(asset, [" oak ", "table"]) == ["oak", "table"]
    assert LibraryClient(server).asset(asset)["user_tags"] == ["oak", "table"]
    with pytest.raises(ClientError, match=r"^http://127\.0\.0\.1:\d+: .*token"):
        LibraryClient(server, token="wrong").set_tags(asset, ["pine"])
    with pytest.raises(ClientError, match="no asset 999999"):
        LibraryClient(server).asset(999999)


def test_client_addresses_and_mappings_that_cannot_work_are_one_clear_error(tmp_path, server, monkeypatch):
    from core.library import client as client_module
    from core.library.client import ClientError, LibraryClient, PathMap

    with pytest.raises(ClientError, match="not a file"):
        LibraryClient(server).search_mesh(tmp_path)
    big = tmp_path / "big.glb"
    big.write_bytes(b"glTF" + b"\0" * 100)
    monkeypatch.setattr(client_module, "MAX_UPLOAD", 50)
    with pytest.raises(ClientError, match=r"big.glb: 104 bytes, more than a server takes \(50\)"):
        LibraryClient(server).search_mesh(big)
    bad = tmp_path / "bad.glb"
    bad.write_bytes(b"glTF junk")
    with pytest.raises(ClientError, match="uploaded .glb file cannot be read"):  # the server's message
        LibraryClient(server).search_mesh(bad)

    sock = listen("127.0.0.1", 0)
    closed = url(sock)
    sock.close()  # nothing listens there now
    with pytest.raises(ClientError, match="cannot reach .*is `ulip2 serve` running there"):
        LibraryClient(closed, timeout=5).status()
    with pytest.raises(ClientError, match="not a server address"):
        LibraryClient("ftp://assets/")
    with pytest.raises(ClientError, match="SERVER_PREFIX=LOCAL_PREFIX"):
        PathMap.parse("/mnt/assets")
    paths = PathMap.parse("/mnt/assets=/Volumes/assets; /mnt/assets/textures=T:\\")
    assert paths.local("/mnt/assets/props/a.glb") == "/Volumes/assets/props/a.glb"
    assert paths.local("/mnt/assets/textures/wood.png") == "T:\\wood.png"  # the longer prefix wins
    assert paths.local("/mnt/assetsX/b.glb") == "/mnt/assetsX/b.glb"  # a prefix ends at a separator
