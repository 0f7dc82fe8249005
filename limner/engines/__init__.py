"""Engines: one small async interface, many interchangeable implementations."""
