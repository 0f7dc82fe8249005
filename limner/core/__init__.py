"""Shapes and rules only: the canonical request/result models, ``Capabilities``, the error tree, sizes,
styles and imaging helpers. Imports no other limner package, so everything else can build on it."""
