"""The shared language of the lattice: WIT types and values, errors, subjects, wire models.

Nothing here imports wasmtime; ``trellis.host`` and ``trellis.providers`` build on it.
"""
