"""The wm-async command's subcommands (the command itself is :mod:`wm_async.cli`)."""
