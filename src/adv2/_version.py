"""The package version (one place; ``adv2.__version__``)."""

__version__ = "0.8.0"
