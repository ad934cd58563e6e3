"""The AIME world model (DESIGN §6)."""

from aime_core.model.aime import AIME, LOSS_TERMS, MODULES, count_parameters

__all__ = ["AIME", "LOSS_TERMS", "MODULES", "count_parameters"]
