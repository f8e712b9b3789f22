"""The Trellis host: the wasmtime component runtime, the invocation chain and the CLI."""
