"""Experiments built on the main job: the ablation that is the project's science check (3DSL against the
RGB-only baseline on the embedded cloth-changing set)."""
