"""A recording webhook listener for capturing Alertmanager payloads (see README.md here).

    python3 capture.py [OUT_DIR]     # default ./captured; port from LISTENER_PORT (19095)

Every POST is written as OUT_DIR/NNN-<last path segment>.body (the exact bytes), .json (the body
pretty-printed, key order kept) and .headers.json (the request headers), and answered 200. The
first POST to /hook/flaky is answered 503, so that Alertmanager's retry of it is recorded too
(`retried-after-503.json`). Standard library only; listens on loopback; Ctrl-C stops it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "captured")
PORT = int(os.environ.get("LISTENER_PORT", "19095"))
_lock = threading.Lock()
_count = 0
_refused: set[str] = set()


class Recorder(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        global _count
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        name = self.path.rstrip("/").rsplit("/", 1)[-1] or "root"
        with _lock:
            _count += 1
            stem = OUT / f"{_count:03d}-{name}"
            refuse = self.path == "/hook/flaky" and self.path not in _refused
            _refused.add(self.path)
        stem.with_suffix(".body").write_bytes(body)
        pretty = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
        stem.with_suffix(".json").write_text(pretty + "\n", encoding="utf-8")
        headers = json.dumps(dict(self.headers.items()), indent=2)
        stem.with_suffix(".headers.json").write_text(headers + "\n", encoding="utf-8")
        status = 503 if refuse else 200
        sys.stdout.write(f"{stem.name}: {self.path} {len(body)} bytes -> {status}\n")
        sys.stdout.flush()
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per POST is printed above


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Recorder)
    sys.stdout.write(f"recording to {OUT}/ on http://127.0.0.1:{PORT}/\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
