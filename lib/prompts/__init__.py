"""Prompt handling: click parsing, coordinate mapping, crop placement and click simulation."""
