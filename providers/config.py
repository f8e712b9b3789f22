"""``config``: ``wasi:config/store`` (runtime configuration) from named config.

A component reads the values of its link's target config (``Link.target_config``: the named
config the host resolved for the link) merged over the provider's own config, which acts as
defaults for every component. Values are read on each call from the provider's current copy of
the link, so a relink with new config takes effect without restarting the component.

Serves ``wasi:config/store@0.2.0-draft-2024-09-27`` and ``@0.2.0-draft`` (same shape):
``get(key) -> result<option<string>, error>``, ``get-all() -> result<list<tuple<string,
string>>, error>``; the ``error`` variant (``upstream``, ``io``) is never produced here.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..lattice.wit.values import Ok
from .sdk import Link, Provider


class ConfigStore:
    """``wasi:config/store`` for one link."""

    def __init__(self, provider: ConfigProvider, link: Link) -> None:
        self.provider = provider
        self.link = link

    def values(self) -> Mapping[str, str]:
        link = self.provider.links.get(self.link.key, self.link)
        return {**self.provider.config, **link.target_config}

    def get(self, key: str) -> Ok:
        return Ok(self.values().get(key))

    def get_all(self) -> Ok:
        return Ok(sorted(self.values().items()))


class ConfigProvider(Provider):
    """Built-in ``config`` provider; its own config holds defaults for every component."""

    name = "config"
    interfaces = ("wasi:config/store",)

    def implementation(self, interface: str, link: Link) -> ConfigStore:
        return ConfigStore(self, link)
