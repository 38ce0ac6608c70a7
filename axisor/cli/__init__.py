"""Command-line interface: ``axisor COMMAND``."""
