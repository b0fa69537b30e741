"""A report.json as the optimizer writes it, with hostile text where a user's text lands."""

from __future__ import annotations

from typing import Any

HOSTILE = "<script>alert('x')</script>&\"'"


def sample_report(**changes: Any) -> dict[str, Any]:
    rows = [
        ("fp32", "fp32", 0.0, 2000.0, True, False, ""),
        ("int8-dynamic", "int8", 0.004, 5200.0, True, True, "fastest passing"),
        ("pruned-structured", "fp32", 0.08, 7000.0, False, False, "top1 drop 0.08 > maxDrop 0.01"),
        (HOSTILE, "int8", None, None, False, False, f"failed: {HOSTILE}"),
    ]
    report: dict[str, Any] = {
        "apiVersion": "optiserve.io/v1alpha1",
        "kind": "OptimizationReport",
        "name": "digits",
        "recipeDigest": "ab" * 32,
        "createdAt": "2026-11-27T09:30:24+00:00",
        "optimization": {"accuracy": {"metric": "top1", "maxDrop": 0.01}},
        "plan": ["fp32: load_export", "int8-dynamic: load_export -> quantize(int8, dynamic)"],
        "notes": [],
        "baseline": {"runtime": "pytorch-torchscript", "throughput": 1500.0, "p50_ms": 0.9},
        "candidates": [
            {
                "name": name,
                "precision": precision,
                "latencyMs": 0.5,
                "throughput": throughput,
                "accuracyDrop": drop,
                "sizeBytes": 40_000,
                "passed": passed,
                "chosen": chosen,
                "reason": reason,
            }
            for name, precision, drop, throughput, passed, chosen, reason in rows
        ],
        "candidateDetails": {
            "int8-dynamic": {"benchmark": {"p50_ms": 0.4, "p95_ms": 0.6, "p99_ms": 0.9}},
            "fp32": {"benchmark": {"p50_ms": 0.8, "p95_ms": 1.0, "p99_ms": 1.4}},
        },
        "chosen": "int8-dynamic",
        "fallbackReason": None,
        "artifact": {"uri": "pvc://model-store/digits/x/model_repository/"},
        "metrics": {"speedup": "3.47x", "accuracyDrop": 0.004, "sizeRatio": 3.9},
        "tools": {"optiserve": "0.1.0"},
    }
    report.update(changes)
    return report
