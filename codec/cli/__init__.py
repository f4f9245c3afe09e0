"""Command-line shells over the codec modules."""
