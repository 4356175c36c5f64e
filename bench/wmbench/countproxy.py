"""Counting the calls a client makes to moto: a loopback HTTP proxy that
forwards every request to moto unchanged and counts them by their
`X-Amz-Target` (the API action). Used for one untimed run per side, so
that the report states the number of calls from the run, not from
reading the code."""

import collections
import http.client
import http.server
import threading
import urllib.parse


class CountingProxy:
    def __init__(self, upstream):
        up = urllib.parse.urlsplit(upstream)
        counts = self.counts = collections.Counter()
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    counts[self.headers.get("X-Amz-Target", self.path).rsplit(".", 1)[-1]] += 1
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self):
        """The counts so far, reset."""
        out = dict(self.counts)
        self.counts.clear()
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()
