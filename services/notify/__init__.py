"""Notify: tells people what happened to their case."""
