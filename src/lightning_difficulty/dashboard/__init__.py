"""The interactive "Difficulty" dashboard: a TensorBoard plugin and the assets it reads.

``write_dashboard_assets`` runs at fit end; :class:`~lightning_difficulty.dashboard.plugin.DifficultyPlugin`
is loaded by TensorBoard through the ``tensorboard_plugins`` entry point.
"""

from lightning_difficulty.dashboard.assets import write_dashboard_assets

__all__ = ["write_dashboard_assets"]
