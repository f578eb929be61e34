"""The package version, importable from anywhere in ravit without the package's exports."""

__version__ = "0.1.0"
