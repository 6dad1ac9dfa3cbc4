"""``run``, ``runs``, ``show``, ``logs``, ``cancel``, ``verify``: local pipeline runs."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the local-run subcommands."""
