"""Command-line entry points (click), thin: parse options -> config dataclass -> library call."""
