"""Auto-interp; more comes with the auto-interp issue."""
