"""Audit replays: case timelines, state as of a moment, tamper evidence, reports."""
