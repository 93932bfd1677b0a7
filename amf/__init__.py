"""amf: atypical mitotic figure classification shared by training and inference (MIDOG 2025 Track 2)."""

__version__ = "1.0.0"

CLASS_NAMES: tuple[str, str] = ("normal", "atypical")
"""Class order of every model head; index 1 (atypical) is the positive class."""
