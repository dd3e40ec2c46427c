"""Blender run without a window by the ulip2 environment: the crash-isolated worker that
core.blender_pool starts (`python -m blender_addon.headless.worker`) and `ulip2 blender
tag`'s child (`python -m blender_addon.headless.tag_file`). Not in the extension's zip."""
