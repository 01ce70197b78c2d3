"""A tiny webhook receiver for trying FlashCart's webhooks on this machine.

Checks each delivery's signature with the endpoint's secret and prints it; answers
204 when the signature holds, 400 when it does not (FlashCart then retries). The
standard library only:

    FLASHCART_WEBHOOK_SECRET=whsec_... python3 docs/examples/webhook_receiver.py 9000

`verify` is the one in docs/webhooks.md ("Verifying a delivery").
"""

import hashlib
import hmac
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verify(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """True if `body` carries FlashCart's signature under `secret`, made recently."""
    pairs = [item.split("=", 1) for item in header.split(",")]
    timestamp = next(value for key, value in pairs if key == "t")
    signed = timestamp.encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    recent = abs(time.time() - int(timestamp)) <= tolerance
    return recent and any(hmac.compare_digest(expected, v) for k, v in pairs if k == "v1")


SECRET = os.environ.get("FLASHCART_WEBHOOK_SECRET", "")


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            valid = verify(SECRET, self.headers.get("FlashCart-Signature", ""), body)
        except (StopIteration, ValueError):  # no timestamp, or not a number
            valid = False
        print(
            self.headers.get("FlashCart-Event-Type"),
            self.headers.get("FlashCart-Event-Id"),
            f"(attempt {self.headers.get('FlashCart-Delivery-Attempt')}):",
            "signature ok" if valid else "BAD SIGNATURE, refused",
        )
        print(body.decode(errors="replace"), flush=True)
        self.send_response(204 if valid else 400)
        self.end_headers()

    def log_message(self, format, *args):  # the lines above say it all
        pass


if __name__ == "__main__":
    if not SECRET:
        sys.exit("set FLASHCART_WEBHOOK_SECRET to the endpoint's secret (whsec_...)")
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    print(f"receiving webhooks on http://127.0.0.1:{port}/ (Ctrl-C stops)", flush=True)
    server.serve_forever()
