"""Dialects: each translates between one vendor's wire format and limner's core shapes (request in,
result or error out) and calls the service; no engine calls, storage, signing or business rules here."""
