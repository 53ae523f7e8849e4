"""The flip control plane: the readiness gate over observations, the guardrail, the admin API."""
