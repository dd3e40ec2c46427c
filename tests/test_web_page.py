"""The library's web page (serve/web/) in a real headless Chromium, driven by Selenium through
Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`; .ci/run
installs them), against a real server on loopback. The library holds examples/ indexed with
the shipped default bundle, real weights, so "a wooden chair" must find the chair, as
core's Searcher finds it in-process."""

import shutil
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as shown  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from core.bundle import default_bundle_path, read_bundle  # noqa: E402
from core.library.indexer import index_paths  # noqa: E402
from core.library.keys import bundle_id  # noqa: E402
from core.library.search import Searcher  # noqa: E402
from core.library.store import Library  # noqa: E402
from core.library.tagging import caption_library, tag_library  # noqa: E402
from core.runtime import PointEncoder  # noqa: E402
from meshes import EXAMPLES  # noqa: E402
from serve.app import create_app  # noqa: E402
from serve.hosts import LOOPBACK_NAMES  # noqa: E402
from served import serving  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs a browser: apt-get install chromium chromium-driver")
QUERY = "a wooden chair"
MARKUP = "<b>ring<b> <img src=x onerror=alert(1)>.glb"  # a file name that is markup, to be shown as text


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(URL, library path, folder) of a server over seven examples and one markup-named copy,
    indexed, tagged and captioned as `ulip2 index`, `tag` and `caption` do."""
    root = tmp_path_factory.mktemp("site")
    (root / "assets").mkdir()
    for name in ("chair", "lamp", "table", "horse", "palm_tree", "rally_car", "crate"):
        shutil.copy(EXAMPLES / f"{name}.glb", root / "assets" / f"{name}.glb")
    shutil.copy(EXAMPLES / "torus.glb", root / "assets" / MARKUP)
    bundle = read_bundle(default_bundle_path())
    db = root / "lib.sqlite"
    with Library(db) as library:
        index_paths([root / "assets"], library, PointEncoder(bundle, device="cpu"), workers=0)
        tag_library(library, bundle)
        caption_library(library, bundle)
    with serving(create_app(db, bundle, allowed_hosts=LOOPBACK_NAMES)) as base:
        yield base, db, root / "assets"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with its profile, caches and home under a temporary folder."""
    home = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={home / 'profile'}", f"--disk-cache-dir={home / 'cache'}",
                 "--no-first-run", "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache"),
           "PATH": "/usr/bin:/bin"}
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, env=env), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, seconds=30):
    return WebDriverWait(driver, seconds).until(condition)


def cards(driver):
    return driver.find_elements(By.CSS_SELECTOR, "#grid .card")


def search_in_page(driver, base, text):
    driver.get(base + "/")
    wait(driver, shown.text_to_be_present_in_element((By.ID, "status"), "searchable"))
    box = driver.find_element(By.ID, "query")
    box.clear()
    box.send_keys(text, Keys.ENTER)
    wait(driver, shown.text_to_be_present_in_element((By.ID, "status"), "best for"))
    return cards(driver)


def test_type_a_query_see_the_chair_first_and_open_its_details(site, browser):
    base, db, folder = site
    with Library(db, read_only=True) as library:
        searcher = Searcher(library, read_bundle(default_bundle_path()))
        expected = searcher.search(searcher.text_vector(QUERY), 8)
    assert Path(expected[0].path).name == "chair.glb"  # what the shipped default knows

    found = search_in_page(browser, base, QUERY)
    assert [c.find_element(By.CLASS_NAME, "name").text for c in found] == [Path(h.path).name for h in expected]
    assert [float(c.find_element(By.CLASS_NAME, "score").text) for c in found] == \
        pytest.approx([h.score for h in expected], abs=6e-4)
    thumbnail = found[0].find_element(By.TAG_NAME, "img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumbnail) > 0

    found[0].click()
    wait(browser, shown.visibility_of_element_located((By.ID, "details")))
    wait(browser, shown.text_to_be_present_in_element((By.ID, "detail-path"), "chair.glb"))
    assert browser.find_element(By.ID, "detail-path").text == str(folder / "chair.glb")
    assert browser.find_element(By.ID, "detail-format").text == "glb"
    assert browser.find_element(By.ID, "detail-tags").text not in ("", "none")
    assert browser.find_element(By.ID, "detail-caption").text not in ("", "none")

    browser.find_element(By.ID, "similar").click()
    wait(browser, shown.text_to_be_present_in_element((By.ID, "status"), "best for assets like chair.glb"))
    names = [c.find_element(By.CLASS_NAME, "name").text for c in cards(browser)]
    assert "chair.glb" not in names and len(names) == 7  # every other asset, the chair left out
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe  # no script error, no failed request


def test_a_file_name_that_is_markup_is_shown_as_text(site, browser):
    base, _, _ = site
    search_in_page(browser, base, "a torus, a ring")
    names = [c.find_element(By.CLASS_NAME, "name").text for c in cards(browser)]
    assert MARKUP in names
    assert not browser.find_elements(By.CSS_SELECTOR, "#grid b, #grid img[src='x']")


def test_the_tag_filter_and_a_refused_query_in_the_page(site, browser):
    base, db, _ = site
    with Library(db, read_only=True) as library:
        chair = next(i for i, row in library.assets().items() if row["path"].endswith("chair.glb"))
        tag = library.labels("tags", bundle_id(read_bundle(default_bundle_path())), ids=[chair])[chair][0][0]
        tagged = set(library.filtered_ids(tags=[tag]))
    assert 1 <= len(tagged) < 8  # a filter that keeps some assets, not all
    browser.get(base + "/")
    wait(browser, shown.text_to_be_present_in_element((By.ID, "status"), "searchable"))
    browser.find_element(By.ID, "tag").send_keys(tag)
    browser.find_element(By.ID, "query").send_keys(QUERY, Keys.ENTER)
    wait(browser, shown.text_to_be_present_in_element((By.ID, "status"), "best for"))
    assert {int(c.get_attribute("data-id")) for c in cards(browser)} == tagged

    browser.find_element(By.ID, "query").send_keys("x" * 2000, Keys.ENTER)  # past the server's query limit
    status = wait(browser, shown.visibility_of_element_located((By.CSS_SELECTOR, "#status.error")))
    assert "characters" in status.text


def test_search_by_a_mesh_file_from_the_page(site, browser):
    base, _, _ = site
    browser.get(base + "/")
    wait(browser, shown.text_to_be_present_in_element((By.ID, "status"), "searchable"))
    browser.find_element(By.ID, "mesh").send_keys(str(EXAMPLES / "horse.glb"))
    wait(browser, shown.text_to_be_present_in_element((By.ID, "status"), "best for assets like horse.glb"))
    first = cards(browser)[0]
    assert first.find_element(By.CLASS_NAME, "name").text == "horse.glb"
    assert first.find_element(By.CLASS_NAME, "score").text == "1.000"  # the same mesh, sampled as indexed


def test_a_picture_where_the_model_sees_no_images_says_why(site, browser, tmp_path):
    from PIL import Image

    base, _, _ = site
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (200, 120, 40)).save(photo)
    browser.get(base + "/")
    wait(browser, shown.text_to_be_present_in_element((By.ID, "status"), "searchable"))
    browser.find_element(By.ID, "mesh").send_keys(str(photo))
    status = wait(browser, shown.visibility_of_element_located((By.CSS_SELECTOR, "#status.error")))
    assert "no image tower" in status.text and "minilm" in status.text
