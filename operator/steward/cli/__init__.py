"""The ``steward`` command line: thin commands that call services."""
