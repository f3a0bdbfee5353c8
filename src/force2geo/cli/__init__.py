"""The ``force2geo`` command: thin sub-commands that build configs and call the library."""
