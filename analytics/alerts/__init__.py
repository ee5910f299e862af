"""Alert rules over the live data: rule files, the evaluation engine, delivery hooks and Prometheus export."""

from __future__ import annotations

from analytics.alerts.rules import HookSpec, Rule, RuleSet, load_rules, parse_rules

__all__ = ["HookSpec", "Rule", "RuleSet", "load_rules", "parse_rules"]
