"""A group's ``Rules`` from its config: the scaling table and the min/max bounds."""

from __future__ import annotations

from surge.autoscale.policy import Rules
from surge.config.settings import InstanceCount, ScalingSettings


def rules_of(scaling: ScalingSettings, bounds: InstanceCount) -> Rules:
    return Rules(
        min=bounds.min, max=bounds.max,
        evaluation_periods=scaling.evaluation_periods,
        scale_in_evaluation_periods=scaling.scale_in_evaluation_periods,
        scale_in_margin=scaling.scale_in_margin,
        scale_out_cooldown=scaling.scale_out_cooldown,
        scale_in_cooldown=scaling.scale_in_cooldown,
        disable_scale_in=scaling.disable_scale_in,
    )
