"""CLI commands: one module per `clinfuse <command>`."""
