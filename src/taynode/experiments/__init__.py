"""Experiments of the book: each module holds presets, training and evaluation for one task."""
