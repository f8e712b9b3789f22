"""Wire models of the lattice: control requests and replies, inventory, events, headers.

All JSON, all pydantic with ``extra="forbid"`` so a typo in a request is a failed reply that
names the field, not silently ignored. Replies always have the same envelope::

    {"success": bool, "message": str, "response": <payload or null>}
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .subjects import check_token

T = TypeVar("T")


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class CtlReply(Wire, Generic[T]):
    success: bool
    message: str = ""
    response: T | None = None

    @classmethod
    def ok(cls, response: Any = None, message: str = "") -> CtlReply[Any]:
        return CtlReply[Any](success=True, message=message, response=response)

    @classmethod
    def fail(cls, message: str) -> CtlReply[Any]:
        return CtlReply[Any](success=False, message=message)


# -- limits and instances ------------------------------------------------------------------

class LimitsSpec(Wire):
    timeout: float | None = Field(default=None, gt=0)
    """Per-invocation wall-clock deadline, seconds."""
    fuel: int | None = Field(default=None, ge=0)
    max_memory_mib: int | None = Field(default=None, ge=1)


class ScaleComponent(Wire):
    """Start, rescale or (``max_instances=0``) stop a component on one host."""

    component_id: str
    """Lattice-wide id; replicas on several hosts share it (and its queue group)."""
    image: str | None = None
    """``sha256:<hex>`` in the lattice artifact store, or a path the host can read.
    Required to start; optional when only rescaling."""
    max_instances: int = Field(default=16, ge=0)
    mode: Literal["fresh", "pooled"] = "fresh"
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    annotations: dict[str, str] = Field(default_factory=dict)
    request_id: str | None = Field(default=None, max_length=64)
    """Echoed in the ``component_scaled`` / ``component_scale_failed`` event, so the requester
    can wait for the outcome of its own request."""

    @field_validator("component_id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_token(v, "component id")


class StartProvider(Wire):
    """Start a provider on one host, in-process (default) or as a supervised process."""

    provider_id: str
    name: str = Field(min_length=1, max_length=256)
    """A built-in name (``keyvalue-redis``) or ``package.module:Class``."""
    config: str | None = Field(default=None, max_length=256)
    """Named config (``trellis config put``) with the provider's settings."""
    standalone: bool = False

    @field_validator("provider_id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_token(v, "provider id")


class StopProvider(Wire):
    provider_id: str

    @field_validator("provider_id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_token(v, "provider id")


class ProviderInfo(Wire):
    provider_id: str
    name: str
    mode: Literal["in-process", "standalone"]
    config: str | None = None
    started_at: float = 0.0
    restarts: int = 0
    healthy: bool = True
    health_message: str = ""
    pid: int | None = None


class LabelChange(Wire):
    key: str = Field(min_length=1, max_length=128)
    value: str = ""


class LabelKey(Wire):
    """``label.del``: only the key."""

    key: str = Field(min_length=1, max_length=128)


class Empty(Wire):
    """Requests that carry nothing (ping, get inventory): ``{}`` or an empty payload."""


class StopHost(Wire):
    timeout: float = Field(default=10.0, gt=0, le=600)
    """Seconds to drain in-flight invocations before cancelling them."""


# -- inventory -----------------------------------------------------------------------------

class ComponentInfo(Wire):
    component_id: str
    image: str
    digest: str
    max_instances: int
    mode: str
    active: int = 0
    """Invocations running right now."""
    exports: list[str] = Field(default_factory=list)
    annotations: dict[str, str] = Field(default_factory=dict)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    invocations: int = 0
    """Invocations this host served for the component since it started it."""
    errors: int = 0


class HostInfo(Wire):
    host_id: str
    lattice: str
    labels: dict[str, str] = Field(default_factory=dict)
    version: str = ""
    started_at: float = Field(default_factory=time.time)
    uptime_seconds: float = 0.0
    nats_url: str = ""
    """The server this host is connected to right now (credentials stripped)."""


class HostInventory(HostInfo):
    components: list[ComponentInfo] = Field(default_factory=list)
    providers: list[ProviderInfo] = Field(default_factory=list)


# -- events ------------------------------------------------------------------------------

class CloudEvent(Wire):
    """CloudEvents 1.0 structured JSON envelope."""

    specversion: str = "1.0"
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: str
    type: str
    time: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="microseconds"))
    """RFC 3339, as CloudEvents requires (``2026-11-27T18:02:16.123456+00:00``)."""
    datacontenttype: str = "application/json"
    data: dict[str, Any] = Field(default_factory=dict)


def event_type(name: str) -> str:
    return f"com.trellis.{name}"


# -- invocation headers ----------------------------------------------------------------------

class Headers:
    """NATS header names carried on every invocation (DESIGN §2)."""

    INVOCATION_ID = "Trellis-Invocation-Id"
    CALLER = "Trellis-Caller"
    DEADLINE = "Trellis-Deadline"
    """Absolute deadline, Unix epoch seconds (float text)."""
    LINK = "Trellis-Link"
    ENCODING = "Trellis-Encoding"
    """Value encoding of the payload: ``trellis-wit/1`` (``codec.ENCODING``, spec in
    docs/value-encoding.md); absent means ``trellis-wit/1`` (callers leave it out)."""
    STATUS = "Trellis-Status"
    """On replies: ``ok`` or an error kind (``trap``, ``deadline``, ``limit`` …); absent means
    ``ok`` (hosts leave it out of ``ok`` replies)."""
    HOST = "Trellis-Host"
    """On replies: the host that executed the call."""
    DIGEST = "Trellis-Digest"
    """On replies: ``sha256:…`` of the component that answered (callers key signature caches)."""
    OBJECT = "Trellis-Object"
    """The payload is in the lattice's payload object store under this name; the body is empty.
    The reader deletes the object after reading it."""
    SIZE = "Trellis-Size"
    """With ``OBJECT``: the payload's size in bytes."""
    CONTENT_TYPE = "Content-Type"
    """``application/json`` for error bodies and ``_describe`` replies."""
    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"


class RpcErrorBody(Wire):
    """The JSON body of a failed invocation reply (``Trellis-Status`` is not ``ok``). Unknown
    fields are ignored so newer hosts can add some without breaking older callers."""

    model_config = ConfigDict(extra="ignore")

    kind: str
    message: str
    component: str
    function: str
    host: str
    invocation_id: str = ""
    limit: str | None = None
    """For ``kind="limit"``: ``fuel`` or ``memory``."""
    candidates: list[str] | None = None
    """For ``kind="no_such_function"``: the functions the component does export."""


class SpyWatch(Wire):
    """``spy.watch``: publish spy records for the next ``lease`` seconds. Spies renew well
    before it ends; hosts reply with their id (a ``CtlReply``), so a spy knows who heard."""

    lease: float = Field(default=15.0, gt=0, le=300)


class SpyRecord(Wire):
    """One invocation a host served, published on ``trellis.spy.{lattice}.{component}``.

    Encoded on the serving path with ``json.dumps`` (no pydantic there); this model is for
    readers. Unknown fields are ignored so hosts can add some."""

    model_config = ConfigDict(extra="ignore")

    time: float
    """When the call finished, Unix epoch seconds."""
    component: str
    function: str
    outcome: str
    """``ok`` or the error kind of the reply (``trap``, ``timeout``, ``limit``, ``stopped`` …)."""
    duration_ms: float
    """Host-side time: from receiving the request to handing the reply to NATS."""
    host: str
    caller: str = ""
    invocation_id: str = ""
    trace_id: str = ""
    """W3C trace id (32 hex digits) when the caller sent a ``traceparent``, else empty."""


class Describe(Wire):
    """Reply to the reserved ``_describe`` operation: what a caller needs to encode arguments
    and decode results (see ``trellis.lattice.wit.typejson``)."""

    model_config = ConfigDict(extra="ignore")

    component: str
    digest: str
    format: str
    exports: dict[str, Any]
