"""``HostConfig``: everything a host daemon needs, from code, the CLI or ``TRELLIS_*`` variables.

::

    config = HostConfig.from_env()                              # os.environ
    config = HostConfig.from_env({"TRELLIS_LATTICE": "prod"}, labels={"zone": "a"})

Every field has an environment variable (``ENV`` below) and a default, so the CLI and the Helm
chart map onto the same names. Labels come from ``TRELLIS_LABELS`` (``k=v,k2=v2``) and from
``TRELLIS_LABEL_<KEY>=value`` variables (key lower-cased, ``_`` kept); keyword overrides win.
Invalid values raise ``HostConfigError`` naming the variable or field and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ..lattice.connection import NatsOptions
from ..lattice.errors import TrellisError
from ..lattice.registry import HOSTS_MAX_AGE, MISSED_BEATS
from ..lattice.subjects import check_token
from .runtime.engine import DEFAULT_KEEP_RESIDENT, DEFAULT_POOL_INSTANCES, MiB, PoolConfig

ENV: dict[str, str] = {
    "nats_url": "TRELLIS_NATS_URL",
    "lattice": "TRELLIS_LATTICE",
    "host_id": "TRELLIS_HOST_ID",
    "credentials_file": "TRELLIS_NATS_CREDS",
    "nkey_seed_file": "TRELLIS_NATS_NKEY_SEED",
    "token": "TRELLIS_NATS_TOKEN",
    "tls_ca": "TRELLIS_NATS_TLS_CA",
    "tls_cert": "TRELLIS_NATS_TLS_CERT",
    "tls_key": "TRELLIS_NATS_TLS_KEY",
    "connect_timeout": "TRELLIS_CONNECT_TIMEOUT",
    "heartbeat_interval": "TRELLIS_HEARTBEAT_INTERVAL",
    "host_timeout": "TRELLIS_HOST_TIMEOUT",
    "stop_timeout": "TRELLIS_STOP_TIMEOUT",
    "cache_dir": "TRELLIS_CACHE_DIR",
    "allow_file_load": "TRELLIS_ALLOW_FILE_LOAD",
    "pool_instances": "TRELLIS_POOL_INSTANCES",
    "pool_keep_resident_mib": "TRELLIS_POOL_KEEP_RESIDENT",
}
LABELS_ENV = "TRELLIS_LABELS"
LABEL_PREFIX = "TRELLIS_LABEL_"
RESERVED_LABEL_PREFIX = "trellis."
"""Labels the host sets itself (``trellis.os``, ``trellis.arch``, ``trellis.hostname``);
they cannot be set or deleted from outside."""


class HostConfigError(TrellisError, ValueError):
    """A host setting is invalid; the message names it and what is expected."""


class HostConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    nats_url: str = "nats://127.0.0.1:4222"
    """NATS server URL(s), comma-separated."""
    lattice: str = "default"
    """Lattice to join; a NATS token (letters, digits, ``-``, ``_``)."""
    host_id: str | None = None
    """Stable host id. Unset: generated once and kept under ``cache_dir`` (see ``host_ids``)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels for placement; ``trellis.os``/``arch``/``hostname`` are added automatically."""
    credentials_file: Path | None = None
    nkey_seed_file: Path | None = None
    token: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds to keep retrying the first connection to NATS."""
    heartbeat_interval: float = Field(default=5.0, gt=0, le=HOSTS_MAX_AGE / 2)
    """Seconds between ``host_heartbeat`` events (each carries the full inventory) and rewrites
    of the host's registry record; at most half the registry's ``max_age`` (300 s), so a live
    host's record never expires between two beats."""
    host_timeout: float | None = Field(default=None, gt=0, le=HOSTS_MAX_AGE)
    """Seconds without a heartbeat after which readers of the host registry consider this host
    gone (default ``3 × heartbeat_interval``); must be longer than ``heartbeat_interval``."""
    stop_timeout: float = Field(default=10.0, gt=0, le=600)
    """Seconds a graceful stop lets in-flight invocations finish before cancelling them."""
    cache_dir: Path | None = None
    """AOT cache, fetched artifacts and generated host ids (default ``~/.cache/trellis``)."""
    allow_file_load: bool = True
    """Whether ``component.scale`` may name a file path on this host (not just ``sha256:``)."""
    pool_instances: int = Field(default=DEFAULT_POOL_INSTANCES, ge=0, le=100_000)
    """Component instances the host's pooling allocator holds at once (all components
    together); 0 allocates each instance on demand instead (``PoolConfig``)."""
    pool_keep_resident_mib: int = Field(default=DEFAULT_KEEP_RESIDENT // MiB, ge=0, le=4096)
    """MiB of each pooled memory slot kept mapped between instances (faster fresh instances,
    more resident memory)."""

    def pool(self) -> PoolConfig | None:
        """The instance pool these settings ask for (None: on demand)."""
        if self.pool_instances == 0:
            return None
        return PoolConfig(self.pool_instances, self.pool_keep_resident_mib * MiB)

    @field_validator("lattice")
    @classmethod
    def _lattice(cls, v: str) -> str:
        return check_token(v, "lattice")

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, v: str | None) -> str | None:
        return None if v is None else check_token(v, "host id")

    @field_validator("host_timeout")
    @classmethod
    def _host_timeout(cls, v: float | None, info: ValidationInfo) -> float | None:
        interval = info.data.get("heartbeat_interval")
        if v is not None and interval is not None and v <= interval:
            raise ValueError(f"must be longer than heartbeat_interval ({interval:g}s), or the "
                             "host would look gone between two heartbeats")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            check_label_key(key)
        return v

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> HostConfig:
        """Build from ``TRELLIS_*`` variables (``os.environ`` when ``env`` is None); keyword
        ``overrides`` that are not None win (the CLI passes its flags here).

        Raises:
            HostConfigError: a variable or override does not parse or validate.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, var in ENV.items():
            raw = env.get(var)
            if raw is not None and raw != "":
                values[name] = raw
        labels = parse_labels(env.get(LABELS_ENV, ""), LABELS_ENV)
        for var, value in env.items():
            if var.startswith(LABEL_PREFIX) and len(var) > len(LABEL_PREFIX):
                labels[var[len(LABEL_PREFIX):].lower()] = value
        labels.update(overrides.pop("labels", None) or {})
        if labels:
            values["labels"] = labels
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.build(**values)

    @classmethod
    def build(cls, **values: Any) -> HostConfig:
        """Validate ``values``; errors name the field (and its variable) instead of a pydantic
        report."""
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "config"
                var = ENV.get(str(err["loc"][0])) if err["loc"] else None
                where = f"{field} ({var})" if var else field
                problems.append(f"{where}: {err['msg']}")
            raise HostConfigError("invalid host config: " + "; ".join(problems)) from None

    def nats_options(self, name: str | None = None) -> NatsOptions:
        return NatsOptions(
            url=self.nats_url, credentials_file=self.credentials_file,
            nkey_seed_file=self.nkey_seed_file, token=self.token, tls_ca=self.tls_ca,
            tls_cert=self.tls_cert, tls_key=self.tls_key, name=name,
            connect_timeout=self.connect_timeout,
        )

    def resolved_host_timeout(self) -> float:
        """``host_timeout``, else ``MISSED_BEATS`` (3) heartbeat intervals."""
        if self.host_timeout is not None:
            return self.host_timeout
        return round(MISSED_BEATS * self.heartbeat_interval, 6)

    def resolved_cache_dir(self) -> Path:
        """``cache_dir``, else the runtime's default (``$TRELLIS_CACHE_DIR``, XDG, ~/.cache)."""
        from .runtime.cache import default_cache_dir

        return self.cache_dir if self.cache_dir is not None else default_cache_dir()


def check_label_key(key: str) -> str:
    if not key or len(key) > 128 or any(c.isspace() for c in key) or "=" in key:
        raise ValueError(f"label key {key!r} is not valid: use 1-128 characters, no spaces or "
                         "'='")
    return key


def parse_labels(text: str, source: str = "--label") -> dict[str, str]:
    """``k=v,k2=v2`` (or one ``k=v``) into a dict; ``HostConfigError`` names ``source``."""
    out: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HostConfigError(f"{source}: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


class HostIdSlot:
    """A generated host id that survives restarts: ``{cache_dir}/host-ids/{lattice}/slot-N.id``.

    Each running host holds an exclusive ``flock`` on its slot's lock file, so several hosts on
    one machine (or in one process) get distinct ids, and a restarted host gets its old id back
    from the lowest free slot. The kernel drops the lock when the process dies, even by
    ``kill -9``. ``release()`` frees the slot.
    """

    def __init__(self, cache_dir: Path, lattice: str, max_slots: int = 256) -> None:
        import fcntl
        import secrets
        import socket

        folder = cache_dir / "host-ids" / lattice
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(max_slots):
            fd = os.open(folder / f"slot-{n}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._fd: int | None = fd
            id_file = folder / f"slot-{n}.id"
            existing = id_file.read_text().strip() if id_file.exists() else ""
            try:
                self.host_id = check_token(existing, "host id")
            except ValueError:
                base = "".join(c if c.isalnum() or c in "-_" else "-"
                               for c in socket.gethostname().split(".")[0])[:40].strip("-")
                self.host_id = f"{base or 'host'}-{secrets.token_hex(3)}"
                id_file.write_text(self.host_id + "\n")
            return
        raise HostConfigError(
            f"all {max_slots} host id slots under {folder} are taken by running hosts; "
            "set host_id (TRELLIS_HOST_ID) explicitly"
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
