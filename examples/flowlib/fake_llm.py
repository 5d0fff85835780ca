"""A fake LLM HTTP server on 127.0.0.1, for the example flow files.

``start()`` (a python step) starts it in a daemon thread and returns its base
URL; it lives as long as the process. It answers like a slow language model,
without network or API keys:

* ``POST /v1/outline`` ``{"topic", "sections"}`` -> ``{"title", "sections": [...]}``;
  the first call answers 503 (overloaded), to show a retry;
* ``POST /v1/complete`` ``{"prompt"}`` -> ``{"text", "tokens"}``.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any

LATENCY = 0.3  # seconds per answer, like a (fast) model

_lock = threading.Lock()
_calls: dict[str, int] = {}


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep the flow's output clean
        pass

    def _send(self, status: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with _lock:
            _calls[self.path] = _calls.get(self.path, 0) + 1
            count = _calls[self.path]
        time.sleep(LATENCY)
        if self.path == "/v1/outline":
            if count == 1:
                self._send(503, {"error": "overloaded, try again"})
                return
            topic = request.get("topic", "something")
            n = int(request.get("sections", 3))
            names = ["Why it matters", "The basic idea", "A worked example", "Pitfalls",
                     "Testing it", "Going further"]
            self._send(200, {"title": f"A short guide to {topic}",
                             "sections": [names[i % len(names)] for i in range(n)]})
        elif self.path == "/v1/complete":
            prompt = str(request.get("prompt", ""))
            words = prompt.split()
            text = f"(model) {' '.join(words[:12])}{' ...' if len(words) > 12 else ''}"
            self._send(200, {"text": text, "tokens": len(words)})
        else:
            self._send(404, {"error": f"no such endpoint: {self.path}"})


def start() -> str:
    """Start the server on a free port of 127.0.0.1; return its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fake-llm", daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def article(title: str, sections: list[str], drafts: list[dict[str, Any]]) -> str:
    """Put the drafted sections together under their headings."""
    parts = [title, "=" * len(title)]
    for name, draft in zip(sections, drafts, strict=True):
        parts += ["", name, "-" * len(name), draft["text"]]
    return "\n".join(parts)
