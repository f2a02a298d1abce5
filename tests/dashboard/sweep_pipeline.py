"""A pipeline with fan-outs for the dashboard's API and browser tests: a sweep of ``train`` over learning
rates (told apart by ``lr=``), ``n`` runs of ``add`` (a group), and values of many kinds for the Run panel.

Importable by module name (tests/ is on the path)."""

from __future__ import annotations

import sematic_k8s as sk


@sk.func
def train(lr: float, epochs: int) -> float:
    print(f"training with lr={lr} for {epochs} epochs")
    return round(lr * epochs, 6)


@sk.func
def add(x: int, y: int) -> int:
    return x + y


@sk.func
def best(scores: list[float], sums: list[int]) -> dict:
    print("picking the best of", len(scores), "scores")
    return {"best": max(scores), "sums": {"count": len(sums), "total": sum(sums)}, "scores": scores}


@sk.func
def sweep(n: int) -> dict:
    scores = [train(lr, 3) for lr in (0.1, 0.01, 0.001)]
    return best(scores, [add(i, 1) for i in range(n)])
