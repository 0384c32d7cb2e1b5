"""A stand-in OpenAI-compatible endpoint on loopback: `/v1/chat/completions` answered by a function of the request.

The function gets the request's JSON (model, messages) and returns the assistant's text, or an (HTTP status,
headers, body) triple for anything else (errors, redirects). Every request is recorded with its headers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = str | tuple[int, dict[str, str], bytes]


def completion(content: str) -> dict:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "standin",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def scene_brief(request: dict) -> dict:
    """The scene plan JSON the code generator sends as its user message."""
    user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    return json.loads(user.split("\n", 1)[1])


class StandinLLM:
    def __init__(self, answer: Callable[[dict], Answer]):
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    payload = json.loads(body) if body else {}
                except ValueError:
                    payload = {}
                standin.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "json": payload})
                result = standin.answer(payload)
                if isinstance(result, str):
                    status, headers, data = 200, {"Content-Type": "application/json"}, json.dumps(completion(result)).encode()
                else:
                    status, headers, data = result
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = _serve
            do_GET = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.origin + "/v1"

    def __enter__(self) -> StandinLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
