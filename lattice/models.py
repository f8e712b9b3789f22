"""Wire models of the lattice: control requests and replies, inventory, events, headers.

All JSON, all pydantic with ``extra="forbid"`` so a typo in a request is a failed reply that
names the field, not silently ignored. Replies always have the same envelope::

    {"success": bool, "message": str, "response": <payload or null>}
"""

from __future__ import annotations

import time
import uuid
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

    @field_validator("component_id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_token(v, "component id")


class LabelChange(Wire):
    key: str = Field(min_length=1, max_length=128)
    value: str = ""


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


class HostInfo(Wire):
    host_id: str
    lattice: str
    labels: dict[str, str] = Field(default_factory=dict)
    version: str = ""
    started_at: float = Field(default_factory=time.time)
    uptime_seconds: float = 0.0


class HostInventory(HostInfo):
    components: list[ComponentInfo] = Field(default_factory=list)


# -- events ------------------------------------------------------------------------------

class CloudEvent(Wire):
    """CloudEvents 1.0 structured JSON envelope."""

    specversion: str = "1.0"
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: str
    type: str
    time: float = Field(default_factory=time.time)
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
    """Value encoding of the payload: ``wit-binary/1`` (see docs/value-encoding.md)."""
    STATUS = "Trellis-Status"
    """On replies: ``ok`` or an error kind (``not_found``, ``timeout``, ``trap``, ``limit`` …)."""
    HOST = "Trellis-Host"
    """On replies: the host that executed the call."""
    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"
