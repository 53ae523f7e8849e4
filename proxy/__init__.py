"""shadowproxy: serve from the primary, shadow to the other side, compare, measure, flip."""

__version__ = "0.1.0"
