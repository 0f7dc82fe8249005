"""Dialects: each is a thin translation between one vendor's wire format and limner's core shapes."""
