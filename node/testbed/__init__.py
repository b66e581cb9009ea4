"""A federation on loopback for the demo, the end-to-end tests and the benchmarks: the
authority, a hub and department nodes with synthetic data, all through the product's own
set-up (certificates from CSRs, a signed directory, ``node.toml`` files)."""

from hedui.node.testbed.federation import DEFAULT_MEMBERS, MemberPlan, Testbed, default_policy, free_port

__all__ = ["MemberPlan", "Testbed", "default_policy", "free_port", "DEFAULT_MEMBERS"]
