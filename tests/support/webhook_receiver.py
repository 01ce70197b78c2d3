"""A webhook receiver for tests: a small threaded HTTP server on 127.0.0.1 that records
every request (time, headers, body) and answers what the test says (`status`, extra
`headers`, an `answer` body), after an optional `delay`; over https with `tls`."""

import http.server
import json
import ssl
import threading
import time
from dataclasses import dataclass


@dataclass
class Received:
    at: float  # time.time() on arrival
    headers: dict
    body: bytes
    status: int  # what the receiver answered

    @property
    def event(self):
        return json.loads(self.body)

    @property
    def event_id(self):
        return self.headers.get("FlashCart-Event-Id")


class WebhookReceiver:
    def __init__(self, status=200, delay=0.0, headers=None, answer=b"ok", tls=None):
        self.status = status
        self.delay = delay
        self.headers = headers or {}
        self.answer = answer
        self.cut_off = 0  # answers the client hung up on before reading them whole
        self.received = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.status
                with receiver._lock:
                    receiver.received.append(
                        Received(time.time(), dict(self.headers.items()), body, status)
                    )
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                try:
                    self.wfile.write(receiver.answer)
                except OSError:  # the client hung up before reading it all
                    receiver.cut_off += 1

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls:  # (certificate file, key file): serve https
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.port = self.server.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def delivered(self):
        """The requests answered 2xx."""
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def delivered_ids(self):
        return [r.event_id for r in self.delivered()]
