"""The embedded demo (``lightning-difficulty demo``): digits data, a small CNN, every callback."""
