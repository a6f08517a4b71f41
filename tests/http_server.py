"""A real HTTP server on 127.0.0.1 for the download tests (no network needed)."""

from __future__ import annotations

import http.server
import threading


class RangeServer:
    """Serves ``files`` (name -> bytes) at any path ending in the name, with Range requests (for
    resumed downloads); ``truncate_first`` cuts the first reply in half. ``url`` is the server's
    root, ``requests`` the (path, Range header) of every request."""

    def __init__(self, files: dict[str, bytes], truncate_first: bool = False):
        self.files, self.requests, self.truncate_first = files, [], truncate_first
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = outer.files.get(self.path.rsplit("/", 1)[-1])
                outer.requests.append((self.path, self.headers.get("Range")))
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if outer.truncate_first:
                    outer.truncate_first = False
                    chunk = chunk[: len(chunk) // 2]
                self.wfile.write(chunk)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
