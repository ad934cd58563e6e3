"""Catch a non-finite loss term or gradient at the step it appears, and say exactly where."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class NonFinite:
    """What went non-finite at one step: loss terms and modules whose gradients hold NaN/Inf."""

    step: int
    epoch: int
    terms: dict[str, float] = field(default_factory=dict)  # term -> its value (nan or +-inf)
    modules: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        values = list(self.terms.values())
        return "nan" if not values or any(math.isnan(v) for v in values) else "inf"

    @property
    def key(self) -> str:
        return f"loss/{next(iter(self.terms))}" if self.terms else "grad_norm"

    def message(self) -> str:
        terms = ", ".join(f"{k}={v}" for k, v in self.terms.items()) or "none (loss finite)"
        modules = ", ".join(self.modules) or "none"
        return (
            f"non-finite values at step {self.step} (epoch {self.epoch}): loss terms: {terms}; "
            f"non-finite gradients in: {modules}"
        )

    def alert(self) -> dict:
        return {
            "kind": self.kind,
            "key": self.key,
            "step": self.step,
            "epoch": self.epoch,
            "message": self.message(),
            "terms": list(self.terms),
            "modules": self.modules,
        }


def bad_terms(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Loss terms that are NaN or Inf (one host sync for all of them)."""
    values = torch.stack([v.detach().float() for v in terms.values()]).cpu().tolist()
    return {k: v for k, v in zip(terms, values, strict=True) if not math.isfinite(v)}


def module_grad_norms(model: torch.nn.Module, modules: tuple[str, ...]) -> dict[str, float]:
    """L2 norm of the gradients of each named submodule (NaN/Inf when any of its gradients is)."""
    norms = []
    for name in modules:
        grads = [
            p.grad.detach().float().norm() for p in getattr(model, name).parameters() if p.grad is not None
        ]
        norms.append(torch.stack(grads).norm() if grads else torch.zeros((), device=_device(model)))
    values = torch.stack(norms).cpu().tolist()
    return dict(zip(modules, values, strict=True))


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def dump(path: str | Path, report: NonFinite, batches, model: torch.nn.Module) -> str:
    """Save the offending batch(es) and the model state for replay."""
    path = Path(path)
    torch.save(
        {
            "report": report.alert(),
            "batches": [tuple(t.cpu() for t in batch) for batch in batches],
            "model": model.state_dict(),
            "model_hparams": getattr(model, "hparams", None),
        },
        path,
    )
    return str(path)
