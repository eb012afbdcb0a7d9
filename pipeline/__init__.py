"""vtl: transfer learning for video (and image) classification.

The stages, in the order a user runs them: prepare → sample → train → evaluate → benchmark.
"""

__version__ = "0.1.0"

# Bumped when the workspace layout changes incompatibly; stages refuse older workspaces.
WORKSPACE_FORMAT = 1
