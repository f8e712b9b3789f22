"""A ``wasi:cli/command`` test guest: reports what WASI gave it, so the host's plumbing shows.

stdout: ``args: <argv[1:] as JSON>``, ``greeting: <$GREETING>``, then the content of the file
named by ``--read PATH`` (read through a preopened directory). stderr: ``to-stderr``. The exit
status comes from ``--exit N`` via ``sys.exit``; WASI 0.2.0's ``exit`` only carries ok/err, so
any ``N != 0`` reaches the host as 1. A failed ``--read`` is left uncaught on purpose: the guest
prints its own traceback and fails, which is what the host must survive cleanly.
"""

from __future__ import annotations

import json
import os
import sys

from wit_world import exports


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


class Run(exports.Run):
    def run(self) -> None:
        argv = sys.argv[1:]
        print(f"args: {json.dumps(argv)}")
        print(f"greeting: {os.environ.get('GREETING', '')}")
        print("to-stderr", file=sys.stderr)
        path = _option(argv, "--read")
        if path is not None:
            with open(path, encoding="utf-8") as fh:
                print(fh.read(), end="")
        code = _option(argv, "--exit")
        sys.stdout.flush()
        sys.stderr.flush()
        if code is not None:
            sys.exit(int(code))
