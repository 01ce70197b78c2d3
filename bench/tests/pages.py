"""Reading a report back: its chart titles and its images, decoded."""

import base64
import io
import pathlib
from html.parser import HTMLParser

from matplotlib.image import imread

REHEARSAL_TITLES = [
    "Units sold over time",
    "Requests/s by status",
    "Latency percentiles per second",
]


class Page(HTMLParser):
    """The chart titles (h2) and the images (decoded) of a report."""

    def __init__(self):
        super().__init__()
        self.titles, self.images, self.alts, self._in_h2 = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._in_h2 = tag == "h2"
        if tag == "img":
            prefix = "data:image/png;base64,"
            assert attrs["src"].startswith(prefix), "the page must stand alone"
            png = base64.b64decode(attrs["src"][len(prefix) :], validate=True)
            self.images.append(imread(io.BytesIO(png), format="png"))
            self.alts.append(attrs["alt"])

    def handle_data(self, data):
        if self._in_h2:
            self.titles.append(data)
            self._in_h2 = False


def read_page(path):
    page = Page()
    page.feed(pathlib.Path(path).read_text())
    return page


def assert_drawn(page, titles):
    assert page.titles == titles
    assert page.alts == titles
    for image in page.images:
        height, width, channels = image.shape
        assert height > 100 and width > 100 and channels in (3, 4)
        # Something is drawn: not one flat colour.
        assert image.min() < image.max()
