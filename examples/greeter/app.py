"""The seed article's greeter, implemented in Python instead of Rust.

componentize-py generates the ``wit_world`` bindings at build time; ``Greet`` is the
protocol for the exported ``example:greeter/greet`` interface.
"""

from wit_world import exports


class Greet(exports.Greet):
    def greet(self, name: str) -> str:
        return f"Hello from Python, {name}! Built with the Component Model."
