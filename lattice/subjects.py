"""Every NATS subject and JetStream bucket name Trellis uses. Nothing else builds subjects.

Versioned (``v1``) so a future incompatible protocol can run beside this one. Every name
carries the lattice, so several lattices share one NATS deployment.

::

    trellis.ctl.v1.{lattice}.host.ping                      broadcast: every host answers
    trellis.ctl.v1.{lattice}.host.get.{host}                one host's inventory
    trellis.ctl.v1.{lattice}.host.stop.{host}
    trellis.ctl.v1.{lattice}.label.put.{host} / label.del.{host}
    trellis.ctl.v1.{lattice}.component.scale.{host}         start / scale / (scale 0 =) stop
    trellis.ctl.v1.{lattice}.provider.start.{host} / provider.stop.{host}
    trellis.evt.{lattice}.{event}                           CloudEvents
    trellis.rpc.{lattice}.{component}.{operation}           invocations (queue group per component)
    trellis.spy.{lattice}.{component}                       one record per invocation served
    trellis.ctl.v1.{lattice}.spy.watch                      broadcast: a spy is listening
    TRELLIS_{lattice}_artifacts / _payloads                 object stores: components, big payloads
    TRELLIS_{lattice}_hosts                                 KV: one record per live host (registry)
    TRELLIS_{lattice}_links / _config                       KV: links and named config (links.py)
    trellis.prov.{lattice}.{provider}.call                  provider interface calls (queue group)
    trellis.http.{lattice}.{component}                      HTTP requests for a wasi:http component

Operations are ``ns:pkg/iface@ver#func`` or a root ``func``; NATS tokens cannot hold ``.``,
``*``, ``>`` or whitespace, so ``operation_token`` escapes them reversibly (tested).
"""

from __future__ import annotations

import re

CTL_PREFIX = "trellis.ctl.v1"
EVT_PREFIX = "trellis.evt"
RPC_PREFIX = "trellis.rpc"
SPY_PREFIX = "trellis.spy"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


class SubjectError(ValueError):
    """A lattice name, host id or component id that cannot be a NATS subject token."""


def check_token(value: str, what: str) -> str:
    """Lattice names and ids are single NATS tokens: letters, digits, ``-`` and ``_``."""
    if not value or not _TOKEN.match(value) or len(value) > 128:
        raise SubjectError(
            f"{what} {value!r} is not valid: use 1-128 letters, digits, '-' or '_' "
            "(it becomes part of NATS subjects)"
        )
    return value


# -- control -------------------------------------------------------------------------------

def ctl(lattice: str, *tokens: str) -> str:
    return ".".join((CTL_PREFIX, lattice, *tokens))


def host_ping(lattice: str) -> str:
    return ctl(lattice, "host", "ping")


def host_get(lattice: str, host_id: str) -> str:
    return ctl(lattice, "host", "get", host_id)


def host_stop(lattice: str, host_id: str) -> str:
    return ctl(lattice, "host", "stop", host_id)


def label_put(lattice: str, host_id: str) -> str:
    return ctl(lattice, "label", "put", host_id)


def label_del(lattice: str, host_id: str) -> str:
    return ctl(lattice, "label", "del", host_id)


def component_scale(lattice: str, host_id: str) -> str:
    return ctl(lattice, "component", "scale", host_id)


def provider_start(lattice: str, host_id: str) -> str:
    return ctl(lattice, "provider", "start", host_id)


def provider_stop(lattice: str, host_id: str) -> str:
    return ctl(lattice, "provider", "stop", host_id)


def host_ctl_wildcard(lattice: str, host_id: str) -> list[str]:
    """Everything one host must subscribe to for its own control traffic."""
    return [host_ping(lattice), host_get(lattice, host_id), host_stop(lattice, host_id),
            label_put(lattice, host_id), label_del(lattice, host_id),
            component_scale(lattice, host_id), provider_start(lattice, host_id),
            provider_stop(lattice, host_id)]


# -- events --------------------------------------------------------------------------------

def event(lattice: str, name: str) -> str:
    return f"{EVT_PREFIX}.{lattice}.{name}"


def events_all(lattice: str) -> str:
    return f"{EVT_PREFIX}.{lattice}.>"


# -- invocations ---------------------------------------------------------------------------

_ESCAPES = {".": "~d", "*": "~s", ">": "~g", "~": "~~", " ": "~w"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}
_ESCAPE_TABLE = str.maketrans(_ESCAPES)


def operation_token(operation: str) -> str:
    """Escape an operation (``wasi:http/handler@0.2.0#handle``) into one NATS token."""
    return operation.translate(_ESCAPE_TABLE)


def operation_from_token(token: str) -> str:
    out, i = [], 0
    while i < len(token):
        if token[i] == "~" and i + 1 < len(token):
            pair = token[i:i + 2]
            if pair not in _UNESCAPES:
                raise SubjectError(f"bad escape {pair!r} in operation token {token!r}")
            out.append(_UNESCAPES[pair])
            i += 2
        else:
            out.append(token[i])
            i += 1
    return "".join(out)


def rpc(lattice: str, component_id: str, operation: str) -> str:
    return f"{RPC_PREFIX}.{lattice}.{component_id}.{operation_token(operation)}"


def rpc_component(lattice: str, component_id: str) -> str:
    """What a host running ``component_id`` subscribes to (with ``rpc_queue``)."""
    return f"{RPC_PREFIX}.{lattice}.{component_id}.*"


def operation_of(subject: str) -> str:
    """The operation an invocation subject addresses (its last token, unescaped)."""
    return operation_from_token(subject.rsplit(".", 1)[-1])


def rpc_all(lattice: str) -> str:
    return f"{RPC_PREFIX}.{lattice}.>"


def rpc_queue(lattice: str, component_id: str) -> str:
    """Queue group shared by every replica of a component: NATS balances the load."""
    return f"{lattice}.{component_id}"


# -- spy ---------------------------------------------------------------------------------

def spy(lattice: str, component_id: str) -> str:
    """Where a host publishes a ``SpyRecord`` for every invocation of ``component_id`` it
    served (fire-and-forget: nobody listening costs one buffered publish)."""
    return f"{SPY_PREFIX}.{lattice}.{component_id}"


def spy_all(lattice: str) -> str:
    return f"{SPY_PREFIX}.{lattice}.*"


def spy_watch(lattice: str) -> str:
    """Broadcast by spies (and renewed) so hosts publish records only while someone listens."""
    return ctl(lattice, "spy", "watch")


# -- JetStream -----------------------------------------------------------------------------

def payloads_bucket(lattice: str) -> str:
    """Object store for invocation payloads above the server's ``max_payload``. Objects are
    deleted by their reader; the bucket's TTL removes what a dead reader left behind."""
    return f"TRELLIS_{lattice}_payloads"


def artifacts_bucket(lattice: str) -> str:
    """Object store holding component binaries by ``sha256`` digest."""
    return f"TRELLIS_{lattice}_artifacts"


def hosts_bucket(lattice: str) -> str:
    """KV bucket of the host registry: one record per host (key: host id), put on start and
    every heartbeat, deleted on a graceful stop (see ``lattice/registry.py``)."""
    return kv_bucket(lattice, "hosts")


def links_bucket(lattice: str) -> str:
    """KV bucket of links: key ``{source}.{namespace}.{package}.{name}`` (escaped), value a
    ``LinkDef`` as JSON (see ``lattice/links.py``)."""
    return kv_bucket(lattice, "links")


def config_bucket(lattice: str) -> str:
    """KV bucket of named config: key = the escaped name, value a ``ConfigDef`` as JSON."""
    return kv_bucket(lattice, "config")


def kv_bucket(lattice: str, kind: str) -> str:
    """KV bucket per kind: ``links``, ``config``, ``hosts``, ``manifests``, ``actors``."""
    return f"TRELLIS_{lattice}_{kind}"


# -- providers --------------------------------------------------------------------------------

PROVIDER_PREFIX = "trellis.prov"


def provider_call(lattice: str, provider_id: str) -> str:
    """Calls into a provider's interfaces (queue group ``provider_queue``): whether it runs
    standalone or inside a host, components on any host reach it here."""
    return f"{PROVIDER_PREFIX}.{lattice}.{check_token(provider_id, 'provider id')}.call"


def provider_queue(lattice: str, provider_id: str) -> str:
    return f"{lattice}.{provider_id}"


# -- HTTP -------------------------------------------------------------------------------------

HTTP_PREFIX = "trellis.http"


def http_request(lattice: str, component_id: str) -> str:
    """HTTP requests for a component exporting ``wasi:http/incoming-handler`` (queue group
    ``http_queue``), sent by the ``http-server`` provider; docs/protocol.md."""
    return f"{HTTP_PREFIX}.{lattice}.{check_token(component_id, 'component id')}"


def http_queue(lattice: str, component_id: str) -> str:
    return f"http.{lattice}.{component_id}"
