"""Code-generating backends: each is a renderer (IR -> source) plus a compiler (source -> callable)."""
