"""Built-in sql providers, and the ``trellis:sql`` WIT that components build against.

``trellis:sql@0.1.0`` is Trellis's own interface (no standard SQL WIT exists); it ships inside
the package as ``trellis/providers/wit/sql.wit`` so a guest can be built against exactly the
interface the installed provider implements::

    from trellis.providers.sql import sql_wit_path
    shutil.copy(sql_wit_path(), guest_wit / "deps" / "trellis-sql" / "sql.wit")
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SQL_PACKAGE", "sql_wit_path"]

SQL_PACKAGE = "trellis:sql@0.1.0"


def sql_wit_path() -> Path:
    """The installed ``sql.wit`` (package ``trellis:sql@0.1.0``, interface ``query``)."""
    return Path(__file__).resolve().parent.parent / "wit" / "sql.wit"
