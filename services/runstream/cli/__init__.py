"""The ``runstream`` command."""
