"""The privacy plan: the facts a run's epsilon depends on, stated once (`PrivacyPlan`)."""

from tfdp.plan.privacy_plan import PrivacyPlan

__all__ = ["PrivacyPlan"]
