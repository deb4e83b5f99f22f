"""The Method interface and the paper's methods (PFTT, PFIT)."""

from pflbench.methods.base import LocalContext, LocalResult, Method, Parts, Update

__all__ = ["LocalContext", "LocalResult", "Method", "Parts", "Update"]
