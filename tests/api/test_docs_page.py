"""The docs page (/docs): Swagger UI served by the app itself, from the pinned
swagger-ui-bundle package, with nothing loaded from another origin.

tests/system/test_docs_page.py opens the page in a real browser."""

from urllib.parse import urlsplit

import pytest
from swagger_ui_bundle import swagger_ui_path

from tests.support.html_page import CONTENT_TYPES, PageReferences


@pytest.fixture
def page(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    return PageReferences(response.get_data(as_text=True))


def test_the_docs_page_names_only_files_of_this_origin(page):
    assert page.urls, "the page names no file at all"
    for url in page.urls:
        parts = urlsplit(url)
        # A path on this host: no scheme, no host, not protocol-relative (//cdn...).
        assert (parts.scheme, parts.netloc) == ("", ""), url
        assert url.startswith("/") and not url.startswith("//"), url


def test_the_docs_page_runs_swagger_ui_from_files_and_no_inline_script(page):
    sources = [src for src, _text in page.scripts]
    assert [src.rsplit("/", 1)[1] for src in sources] == [
        "swagger-ui-bundle.js",
        "start-swagger-ui.js",
    ]
    assert all(text.strip() == "" for _src, text in page.scripts)


def test_every_file_the_docs_page_names_answers_with_its_content_type(client, page):
    assert {url.rsplit(".", 1)[1] for url in page.urls} == set(CONTENT_TYPES)
    for url in page.urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.mimetype in CONTENT_TYPES[url.rsplit(".", 1)[1]], url
        assert response.content_length > 0, url
    spec = client.get(next(url for url, tag in page.urls.items() if tag == "div"))
    assert spec.json["info"]["title"] == "FlashCart API"


def test_swagger_ui_files_are_the_pinned_packages(client, page):
    bundle = next(src for src, _ in page.scripts if src.endswith("/swagger-ui-bundle.js"))

    response = client.get(bundle)

    assert response.data == (swagger_ui_path / "swagger-ui-bundle.js").read_bytes()
