"""Training objectives of ComSL, one per file; ``multitask.py`` combines them (paper §3.3-3.4)."""

from comsl.objectives.multitask import ComSLMultiTaskLoss

__all__ = ["ComSLMultiTaskLoss"]
