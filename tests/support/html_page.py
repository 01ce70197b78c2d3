"""What a browser would load for an HTML page, read without one (the docs page's tests)."""

from html.parser import HTMLParser

# What a browser accepts under `X-Content-Type-Options: nosniff` (a script needs a
# JavaScript type, a stylesheet text/css). Python's mimetypes says text/javascript
# from 3.12 on, or where /etc/mime.types does; application/javascript before.
CONTENT_TYPES = {
    "js": {"text/javascript", "application/javascript"},
    "css": {"text/css"},
    "png": {"image/png"},
    "json": {"application/json"},
}


class PageReferences(HTMLParser):
    """What a browser loads for the page: each src/href and data-*-url attribute, and
    the text of every <script> (an inline script would need 'unsafe-inline')."""

    def __init__(self, html):
        super().__init__()
        self.urls = {}  # url -> the tag that names it
        self.scripts = []  # (src, text)
        self._script = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") or (name.startswith("data-") and name.endswith("-url")):
                self.urls[value] = tag
        if tag == "script":
            self._script = [dict(attrs).get("src"), ""]

    def handle_data(self, data):
        if self._script is not None:
            self._script[1] += data

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.scripts.append(tuple(self._script))
            self._script = None
