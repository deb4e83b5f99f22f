"""Tasks: loaders, partitioners, prompt formats. A task is a YAML card (``tasks/``)."""

from pflbench.data.task import ClientData, Task

__all__ = ["ClientData", "Task"]
