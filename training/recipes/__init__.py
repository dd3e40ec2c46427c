"""Recipes that produce the shipped default model from real assets this machine can fetch.

sweethome3d: the Sweet Home 3D furniture catalogues (Debian packages) -> meshes, names,
tags, classes by keyword, a split by item, a labelled test CSV. d2: the classic
shape-descriptor baseline (Osada's D2) the trained model must beat on that split.
"""
