"""The package version (its own module, so that modules the package imports lazily can read it
without importing ``poisoncert`` itself)."""

__version__ = "0.1.0"
