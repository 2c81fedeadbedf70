"""Version of the chorus-client package."""

__version__ = "0.1.0"
