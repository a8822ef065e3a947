"""Intake: the window where applications are handed in."""
