"""WIT types, Python values of those types, and the WAVE text syntax."""
