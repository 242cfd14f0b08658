"""Training objectives of ComSL (paper §3.3-3.4): ``cross_entropy`` (LM head + mixed-target CE, every text
objective), ``cml`` (ERM, the CML combination), ``ctc``, ``matching``; ``multitask`` plans the passes,
has the model encode, and scores."""

from comsl.objectives.multitask import ComSLMultiTaskLoss

__all__ = ["ComSLMultiTaskLoss"]
