"""Offline side of the completion server: build a model from query logs, load it, rank."""

from .model import Completion, Model, load
from .normalize import normalize
from .params import BuildParams
from .storage import ModelError

__all__ = ["BuildParams", "Completion", "Model", "ModelError", "load", "normalize"]
