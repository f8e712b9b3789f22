"""A Spin Python SDK 3.x HTTP app, unchanged from what ``spin up`` would run.

Routes (anything else is a 404):

- ``GET /`` — ``hello from spin on trellis``;
- ``GET /kv/KEY`` — the value stored under KEY in the default key-value store (404 if none);
- ``PUT /kv/KEY`` — store the request body under KEY; ``DELETE /kv/KEY`` — remove it;
- ``GET /kv`` — every key of the default store, one per line;
- ``GET /count`` — increments the ``count`` key and answers its new value;
- ``GET /wasi-kv/KEY`` — KEY read through ``wasi:keyvalue`` instead (the same store);
- ``GET /var/NAME`` — the application variable NAME (404 when it is undefined);
- ``GET /sqlite`` — opens Spin's default SQLite database: not provided by Trellis, so it
  traps (the server answers 500 and keeps serving).
"""

from __future__ import annotations

from spin_sdk import http, key_value, sqlite, variables
from spin_sdk.http import Request, Response
from spin_sdk.wit.imports import wasi_keyvalue_store
from spin_sdk.wit.types import Err


def text(status: int, body: str) -> Response:
    return Response(status, {"content-type": "text/plain"}, body.encode())


def kv_route(method: str, key: str, body: bytes | None) -> Response:
    with key_value.open_default() as store:
        if method == "GET" and not key:
            return text(200, "".join(k + "\n" for k in sorted(store.get_keys())))
        if method == "GET":
            value = store.get(key)
            if value is None:
                return text(404, f"no value for {key}\n")
            return Response(200, {"content-type": "application/octet-stream"}, value)
        if method == "PUT":
            store.set(key, body or b"")
            return text(201, f"stored {key}\n")
        if method == "DELETE":
            existed = store.exists(key)
            store.delete(key)
            return text(200 if existed else 404, f"deleted {key}\n")
    return text(405, f"{method} is not allowed here\n")


def count() -> Response:
    with key_value.open_default() as store:
        raw = store.get("count")
        n = int(raw or b"0") + 1
        store.set("count", str(n).encode())
    return text(200, f"{n}\n")


def wasi_kv_get(key: str) -> Response:
    with wasi_keyvalue_store.open("default") as bucket:
        value = bucket.get(key)
    if value is None:
        return text(404, f"no value for {key}\n")
    return Response(200, {"content-type": "application/octet-stream"}, value)


def variable(name: str) -> Response:
    try:
        return text(200, variables.get(name) + "\n")
    except Err as e:
        return text(404, f"{type(e.value).__name__}: {e.value.value}\n")


class IncomingHandler(http.IncomingHandler):
    def handle_request(self, request: Request) -> Response:
        path = request.uri.split("?", 1)[0]
        if path == "/":
            return text(200, "hello from spin on trellis\n")
        if path == "/kv" or path.startswith("/kv/"):
            return kv_route(request.method, path[len("/kv/"):], request.body)
        if path == "/count":
            return count()
        if path.startswith("/wasi-kv/"):
            return wasi_kv_get(path[len("/wasi-kv/"):])
        if path.startswith("/var/"):
            return variable(path[len("/var/"):])
        if path == "/sqlite":
            with sqlite.open_default() as db:
                db.execute("select 1", [])
            return text(200, "sqlite answered\n")
        return text(404, f"no route for {path}\n")
