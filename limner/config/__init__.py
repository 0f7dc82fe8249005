"""Configuration: what a fresh install serves (``defaults``) beside the settings (``limner.settings``)."""
