"""HTTP: serving wasi:http/proxy components (trellis serve) and the wasi:io/wasi:http host side."""
