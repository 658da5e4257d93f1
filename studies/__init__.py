"""Reproduction studies: whole protocols of several runs, resumable, with their reports."""
