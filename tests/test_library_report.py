"""The HTML report and `ulip2 demo`: a tiny library of generated meshes (plus a junk file
and a file name with markup in it) indexed with the session's tiny bundle. Its weights are
random, so only the page's structure is checked, never which asset ranks first."""

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest
import trimesh

from cli.main import main

QUERIES = ["a chair", "a round ball"]
K = 2
# A small tag vocabulary: the page's structure is the same, and its prompt ensembles are a
# few hundred texts where modelnet40's, the default, are 2560.
VOCABULARY = ["chair", "table", "lamp", "box", "ball", "pipe"]
MARKUP_NAME = '<script>alert("x") & co.obj'  # no "/": a file name cannot hold one


class Node:
    def __init__(self, tag, attrs):
        self.tag, self.attrs, self.children, self.text = tag, dict(attrs), [], []

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def all_text(self) -> str:
        return "".join(self.text) + "".join(c.all_text() for c in self.children)

    def find_all(self, tag=None, cls=None):
        for child in self.children:
            if (tag is None or child.tag == tag) and (cls is None or cls in child.classes):
                yield child
            yield from child.find_all(tag, cls)


class TreeBuilder(HTMLParser):
    """html.parser events -> a tree of Nodes (void elements closed at once)."""

    VOID = {"img", "meta", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.root = Node("root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs)
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        while len(self.stack) > 1:
            if self.stack.pop().tag == tag:
                break

    def handle_data(self, data):
        self.stack[-1].text.append(data)


def parse(path: Path) -> Node:
    builder = TreeBuilder()
    builder.feed(path.read_text(encoding="utf-8"))
    return builder.root


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_bundle):
    root = tmp_path_factory.mktemp("report")
    assets = root / "assets"
    assets.mkdir()
    trimesh.creation.box(extents=(1, 2, 0.5)).export(assets / "box.glb")
    trimesh.creation.icosphere(subdivisions=2).export(assets / "ball.ply")
    trimesh.creation.cylinder(radius=0.3, height=1.5).export(assets / MARKUP_NAME)
    (assets / "broken.glb").write_bytes(b"\x00junk, not a glTF binary" * 8)
    (root / "vocabulary.txt").write_text("\n".join(VOCABULARY) + "\n")
    out = root / "demo"
    code = main(["demo", str(assets), "--out", str(out), "--bundle", str(tiny_bundle.path), "--workers", "0",
                 "--quiet", "--query", *QUERIES, "--k", str(K), "--vocab", str(root / "vocabulary.txt")])
    assert code == 1, "broken.glb failed: the demo says so by its exit code, as index does, and still writes the page"
    return root, out


def test_demo_writes_a_self_contained_report(demo, capsys):
    root, out = demo
    page = out / "report.html"
    assert (out / "library.sqlite").is_file() and page.is_file()
    text = page.read_text(encoding="utf-8")
    assert "<script>" not in text, "no script at all, and the file name's markup is escaped"
    assert "&lt;script&gt;alert(&quot;x&quot;) &amp; co.obj" in text
    assert "http://" not in text and "https://" not in text, "nothing to fetch"

    tree = parse(page)
    library = next(tree.find_all("section", "library"))
    cards = list(library.find_all("div", "card"))
    assert len(cards) == 3, "one card per indexed asset (the broken file is not one)"
    for card in cards:
        img = next(card.find_all("img"))
        prefix = "data:image/png;base64,"
        assert img.attrs["src"].startswith(prefix)
        assert base64.b64decode(img.attrs["src"][len(prefix):])[:8] == b"\x89PNG\r\n\x1a\n"
        tags = list(card.find_all("span", "tag"))
        assert 1 <= len(tags) <= 3 and all(t.all_text().strip() for t in tags)
        caption = next(card.find_all("div", "caption")).all_text()
        assert len(caption.strip()) > 5
    names = {next(c.find_all("div", "name")).all_text() for c in cards}
    assert names == {"box.glb", "ball.ply", MARKUP_NAME}
    assert "retrieval from a caption bank" in library.all_text()

    searches = list(tree.find_all("section", "search"))
    assert [next(s.find_all("span", "query")).all_text().strip("“”") for s in searches] == QUERIES
    for section in searches:
        hits = list(section.find_all("div", "card"))
        assert len(hits) == K
        assert all(next(h.find_all("img")).attrs["src"].startswith("data:image/png;base64,") for h in hits)

    failed = next(tree.find_all("ul", "failed")).all_text()
    assert "broken.glb" in failed and "glb" in next(tree.find_all("span", "reason")).all_text().lower()

    banner = next(tree.find_all("div", "warning"))
    assert "untrained" in banner.all_text().lower() and "random weights" in banner.all_text()


def test_report_command_rewrites_the_page_from_the_library(demo, tiny_bundle, capsys):
    from core.library.store import Library

    root, out = demo
    with Library(out / "library.sqlite") as library:  # a tag typed in the desktop app
        box = next(i for i, a in library.assets().items() if Path(a["path"]).name == "box.glb")
        library.set_user_tags(box, ["studio favourite"])
    capsys.readouterr()
    page = root / "again.html"
    assert main(["report", "--db", str(out / "library.sqlite"), "--bundle", str(tiny_bundle.path),
                 "--out", str(page), "--query", "a lamp", "--k", "3", "--vocab", str(root / "vocabulary.txt")]) == 0
    assert capsys.readouterr().out.strip() == str(page.resolve()), "stdout holds the page's path alone"
    tree = parse(page)
    (search,) = tree.find_all("section", "search")
    assert len(list(search.find_all("div", "card"))) == 3
    library = next(tree.find_all("section", "library"))
    assert all(list(card.find_all("span", "tag")) for card in library.find_all("div", "card")), \
        "tags of the named vocabulary are shown"
    box_card = next(card for card in library.find_all("div", "card") if "box.glb" in card.all_text())
    assert next(box_card.find_all("span", "tag")).all_text().startswith("studio favourite"), \
        "a person's tags come first"
