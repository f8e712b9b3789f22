"""Spin compatibility: components built with the Spin Python SDK 3.x run on Trellis unchanged.

Such a component (world ``fermyon:spin/spin-http``) imports Spin's own interfaces next to
wasi:http. Trellis maps them onto what it already has:

- ``fermyon:spin/key-value`` → a ``wasi:keyvalue/store`` implementation (any keyvalue provider,
  or a link dispatcher): Spin's ``store`` resource wraps the provider's ``bucket``; the error
  variants share their case names (``no-such-store``, ``access-denied``, ``other``).
- ``fermyon:spin/variables`` → a ``wasi:config/store`` implementation (named config, link
  config, ``trellis serve --var``); a missing value is ``undefined``.
- every other Spin import (sqlite, mysql, postgres, redis, mqtt, llm, …) is defined, so the
  component loads, but traps when called, with a message naming the import.

``trellis serve`` uses ``ServeBackends``: one keyvalue provider (``--kv``: in memory by default,
or Redis / NATS by URL) behind both ``wasi:keyvalue`` and Spin key-value, and ``--var`` values
behind both ``wasi:config`` and Spin variables. Provider coroutines run on the server's loop
while the guest's worker thread waits (``Blocking``): an async import would make the component
"bridged", whose first poll runs on the loop thread, where wasi:io's blocking waits must not be.

``build_spin_app`` builds a Spin SDK app with the componentize-py this project pins (0.25),
which is newer than spin-sdk 3.4's generated-bindings layout: the build stages the SDK's Python
code with a small import alias (``spin_sdk.wit.*`` → componentize-py's ``wit_world.*``), the
SDK itself unmodified.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from wasmtime import WasmtimeError

from ...lattice.wit import types as t
from ...lattice.wit.values import Case, Err, Ok
from ...providers.keyvalue.common import INTERFACES as KV_INTERFACES
from ...providers.sdk import Provider, ProviderContext, resolve_call
from ..build import BuildError, build_python_component
from ..runtime.imports import HostImports

SPIN_PACKAGES = re.compile(r"^(fermyon:spin|spin:[a-z0-9-]+)/")
"""Imports that belong to Spin (``fermyon:spin/sqlite@2.0.0``, ``spin:postgres/postgres@4.0.0``)."""
KV_DRAFT2 = "wasi:keyvalue/store@0.2.0-draft2"
CONFIG = "wasi:config/store"
VARIABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
"""Spin's rule for variable names (lowercase letters, digits, underscores)."""
CALL_TIMEOUT = 30.0
"""Seconds a guest thread waits for one provider coroutine (providers bound their own waits)."""


def is_spin(world: t.WorldType) -> bool:
    return any(SPIN_PACKAGES.match(i.name) for i in world.imports)


async def _call(impl: Any, function: str, *args: Any) -> Any:
    """Call WIT ``function`` on a provider implementation or a link dispatcher."""
    fn, rest = resolve_call(impl, function, args)
    out = fn(*rest)
    return await out if inspect.isawaitable(out) else out


# -- fermyon:spin/key-value ----------------------------------------------------------------


class SpinStore:
    """Spin's ``store`` resource: one opened wasi:keyvalue bucket."""

    def __init__(self, backend: Any, bucket: Any, label: str) -> None:
        self.backend, self.bucket, self.label = backend, bucket, label

    def close(self) -> None:
        close = getattr(self.bucket, "close", None)
        if callable(close):
            close()


class _StoreFunctions:
    """``[static]store.open`` and ``[method]store.*`` over a ``wasi:keyvalue/store``."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    async def open(self, label: str) -> Ok | Err:
        out = await _call(self._backend, "open", label)
        return Ok(SpinStore(self._backend, out.value, label)) if isinstance(out, Ok) else out

    async def get(self, store: SpinStore, key: str) -> Ok | Err:
        return await _call(store.backend, "[method]bucket.get", store.bucket, key)

    async def set(self, store: SpinStore, key: str, value: bytes) -> Ok | Err:
        return await _call(store.backend, "[method]bucket.set", store.bucket, key, value)

    async def delete(self, store: SpinStore, key: str) -> Ok | Err:
        return await _call(store.backend, "[method]bucket.delete", store.bucket, key)

    async def exists(self, store: SpinStore, key: str) -> Ok | Err:
        return await _call(store.backend, "[method]bucket.exists", store.bucket, key)

    async def get_keys(self, store: SpinStore) -> Ok | Err:
        keys: list[str] = []
        cursor: Any = None
        while True:
            out = await _call(store.backend, "[method]bucket.list-keys", store.bucket, cursor)
            if isinstance(out, Err):
                return out
            keys += out.value["keys"]
            cursor = out.value["cursor"]
            if cursor is None:
                return Ok(keys)


class SpinKeyValue:
    """``fermyon:spin/key-value`` over a ``wasi:keyvalue/store`` (0.2.0-draft2 shapes)."""

    def __init__(self, store: Any) -> None:
        self.resources = {"store": _StoreFunctions(store)}


# -- fermyon:spin/variables ----------------------------------------------------------------


class SpinVariables:
    """``fermyon:spin/variables`` over a ``wasi:config/store``."""

    def __init__(self, config: Any) -> None:
        self._config = config

    async def get(self, name: str) -> Ok | Err:
        if not VARIABLE_NAME.match(name):
            return Err(Case("invalid-name", f"{name!r}: use lowercase letters, digits and _"))
        out = await _call(self._config, "get", name)
        if isinstance(out, Err):
            case = out.value
            detail = case.value if isinstance(case, Case) else case
            return Err(Case("provider", f"reading variable {name!r}: {detail}"))
        if out.value is None:
            return Err(Case("undefined", f"no variable named {name!r} is configured"))
        return Ok(out.value)


class StaticConfig:
    """``wasi:config/store`` from a fixed mapping (``trellis serve --var``)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)

    def get(self, key: str) -> Ok:
        return Ok(self.values.get(key))

    def get_all(self) -> Ok:
        return Ok(sorted(self.values.items()))


# -- everything else Spin ------------------------------------------------------------------


class SpinUnsupported(Mapping[str, Callable[..., Any]]):
    """A Spin interface Trellis does not provide: every function traps, naming itself."""

    def __init__(self, interface: str, why: str = "") -> None:
        self.interface = interface
        self.why = why or "Trellis maps only Spin key-value and variables"

    def __getitem__(self, function: str) -> Callable[..., Any]:
        what = f"{self.interface}#{function}"

        def unsupported(*_args: Any) -> Any:
            raise WasmtimeError(f"Spin import {what} is not supported on Trellis ({self.why})")
        return unsupported

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def spin_imports(world: t.WorldType, base: HostImports, *, keyvalue: Any = None,
                 config: Any = None, wrap: Callable[[Any], Any] = lambda impl: impl
                 ) -> HostImports:
    """``base`` plus Spin's interfaces for a component that imports them.

    ``keyvalue`` is the ``wasi:keyvalue/store`` (draft2) behind Spin key-value and ``config``
    the ``wasi:config/store`` behind variables; by default, what ``base`` serves for those
    (providers, link dispatchers). ``wrap`` is applied to each adapter (``Blocking``)."""
    imports = base.copy()
    keyvalue = keyvalue if keyvalue is not None else base.find(KV_DRAFT2)
    if config is None:
        config = next((base.find(i.name) for i in world.imports
                       if i.name.startswith(CONFIG + "@") and base.find(i.name) is not None),
                      base.find(CONFIG))
    for iface in world.imports:
        name = iface.name.split("@", 1)[0]
        if not SPIN_PACKAGES.match(name) or not (iface.functions or iface.resources):
            continue
        impl: Any
        if name == "fermyon:spin/key-value" and keyvalue is not None:
            impl = wrap(SpinKeyValue(keyvalue))
        elif name == "fermyon:spin/variables" and config is not None:
            impl = wrap(SpinVariables(config))
        elif name in ("fermyon:spin/key-value", "fermyon:spin/variables"):
            impl = SpinUnsupported(iface.name, "no wasi:keyvalue / wasi:config backs it here")
        else:
            impl = SpinUnsupported(iface.name)
        imports.register(iface.name, impl)
    return imports


# -- running provider coroutines for a plain (non-bridged) component -----------------------


class Blocking:
    """A provider implementation whose coroutine functions run on ``loop`` while the calling
    guest thread waits: the component keeps only sync imports and is never bridged. Resource
    classes (``impl.Bucket``, ``impl.resources``) are wrapped the same way."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop,
                 timeout: float = CALL_TIMEOUT) -> None:
        self._target, self._loop, self._timeout = target, loop, timeout

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        loop, timeout = self._loop, self._timeout

        def blocking(*args: Any) -> Any:
            out = fn(*args)
            if not inspect.isawaitable(out):
                return out
            if _on_loop(loop):
                raise RuntimeError("a provider call would block the event loop it runs on")
            future = asyncio.run_coroutine_threadsafe(_awaited(out), loop)
            try:
                return future.result(timeout)
            except TimeoutError:
                future.cancel()
                raise TimeoutError(f"provider call took over {timeout:g} s") from None
        return blocking

    def __call__(self, *args: Any) -> Any:  # a resource constructor
        return self._wrap(self._target)(*args)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._target, name)
        if name == "resources":
            if not isinstance(attr, Mapping):
                return attr
            return {k: Blocking(v, self._loop, self._timeout) for k, v in attr.items()}
        if inspect.isclass(attr):
            return Blocking(attr, self._loop, self._timeout)
        return self._wrap(attr) if callable(attr) else attr


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


# -- trellis serve -------------------------------------------------------------------------


def kv_provider(spec: str) -> Provider:
    """The keyvalue provider for ``trellis serve --kv``: ``memory``, ``redis://…`` or
    ``nats://…``. Raises ``ValueError`` naming the accepted forms."""
    if spec == "memory":
        from ...providers.keyvalue.memory import MemoryKeyValue
        return MemoryKeyValue({})
    scheme = spec.split("://", 1)[0] if "://" in spec else ""
    if scheme in ("redis", "rediss", "unix"):
        from ...providers.keyvalue.redis import RedisKeyValue
        return RedisKeyValue({"url": spec})
    if scheme in ("nats", "tls"):
        from ...providers.keyvalue.nats import NatsKeyValue
        return NatsKeyValue({"url": spec})
    raise ValueError(f"key-value store must be memory, redis://HOST:PORT or nats://HOST:PORT, "
                     f"got {spec!r}")


def variables_from_env(environ: Mapping[str, str],
                       prefix: str = "TRELLIS_SERVE_VAR_") -> dict[str, str]:
    """``TRELLIS_SERVE_VAR_API_KEY=x`` → ``{"api_key": "x"}`` (Spin names are lowercase)."""
    return {k[len(prefix):].lower(): v for k, v in environ.items()
            if k.startswith(prefix) and len(k) > len(prefix)}


class ServeBackends:
    """What ``trellis serve`` gives a component besides wasi:http: ``wasi:keyvalue`` and Spin
    key-value from one provider, ``wasi:config`` and Spin variables from ``variables``."""

    def __init__(self, kv: str = "memory", variables: Mapping[str, str] | None = None) -> None:
        self.provider = kv_provider(kv)
        self.config = StaticConfig(variables or {})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.provider.start(ProviderContext(provider_id=f"serve-{self.provider.name}"))
        self._started = True

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.provider.stop()

    def imports(self, world: t.WorldType, base: HostImports) -> HostImports:
        """``base`` plus what ``world`` imports of keyvalue, config and Spin (unless ``base``
        already serves it)."""
        loop = self._loop
        assert loop is not None, "start() first"
        imports = base.copy()
        for iface in world.imports:
            name, _, version = iface.name.partition("@")
            if base.find(iface.name) is not None or not iface.functions:
                continue
            if name in KV_INTERFACES:
                short = name.rsplit("/", 1)[1] + (f"@{version}" if version else "")
                imports.register(iface.name, Blocking(self.provider.implementation(short, None),
                                                      loop))
            elif name == CONFIG:
                imports.register(iface.name, self.config)
        if not is_spin(world):
            return imports
        store = self.provider.implementation("store@0.2.0-draft2", None)
        return spin_imports(world, imports, keyvalue=store, config=self.config,
                            wrap=lambda impl: Blocking(impl, loop))


# -- building Spin SDK apps ----------------------------------------------------------------

SPIN_WORLD = "spin-http"

_GUEST_ALIAS = '''\
# Added by Trellis's build (host/http/spin.py): spin-sdk 3.4 was generated for an older
# componentize-py whose bindings lived in ``spin_sdk.wit`` (with ``types``); componentize-py
# 0.25 writes them to ``wit_world`` and ``componentize_py_types``. Alias the old names.
import importlib as _importlib
import importlib.abc as _abc
import importlib.util as _util
import sys as _sys


class _SpinWitAlias(_abc.MetaPathFinder, _abc.Loader):
    RENAMES = {
        "spin_sdk.wit.types": "componentize_py_types",
        "spin_sdk.wit.imports.sqlite": "wit_world.imports.fermyon_spin_sqlite",
        "spin_sdk.wit.imports.postgres": "wit_world.imports.fermyon_spin_postgres",
        "spin_sdk.wit.imports.spin_postgres_postgres":
            "wit_world.imports.spin_postgres_postgres_3_0_0",
    }

    def find_spec(self, name, path=None, target=None):
        if name == "spin_sdk.wit" or name.startswith("spin_sdk.wit."):
            return _util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        target = self.RENAMES.get(spec.name) or "wit_world" + spec.name[len("spin_sdk.wit"):]
        return _importlib.import_module(target)

    def exec_module(self, module):
        pass


if not any(isinstance(f, _SpinWitAlias) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _SpinWitAlias())
# -- end of the Trellis addition --

'''


def spin_sdk_dir() -> Path:
    spec = importlib.util.find_spec("spin_sdk")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("a Spin app", "spin-sdk is not installed (pip install spin-sdk==3.4.1)")
    return Path(next(iter(spec.submodule_search_locations)))


_BUILD_LOCK = threading.Lock()


def build_spin_app(src: Path, *, world: str = SPIN_WORLD, out: Path | None = None,
                   progress: Callable[[str], None] | None = None,
                   timeout: float | None = None) -> Path:
    """Build the Spin Python SDK app in ``src`` (its ``app.py``) against the installed
    spin-sdk's WIT and ``world``; cached like every guest build (``host/build.py``)."""
    src = Path(src)
    if not (src / "app.py").is_file():
        raise BuildError(str(src), "no app.py: componentize-py wraps the `app` module")
    sdk = spin_sdk_dir()
    with _BUILD_LOCK, tempfile.TemporaryDirectory(prefix="trellis-spin-") as scratch:
        staged = Path(scratch) / (src.resolve().name or "spin-app")
        ignore = shutil.ignore_patterns(".*", "__pycache__")
        shutil.copytree(src, staged, ignore=ignore)
        package = staged / "spin_sdk"
        shutil.copytree(sdk, package, ignore=shutil.ignore_patterns(".*", "__pycache__", "wit"))
        init = package / "__init__.py"
        init.write_text(_GUEST_ALIAS + init.read_text())
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        return build_python_component(staged, wit=sdk / "wit", world=world, out=out,
                                      progress=progress, **kwargs)


__all__: Sequence[str] = [
    "Blocking", "ServeBackends", "SpinKeyValue", "SpinUnsupported", "SpinVariables",
    "StaticConfig", "build_spin_app", "is_spin", "kv_provider", "spin_imports",
    "variables_from_env",
]
