"""What the artist meets in Blender: the sidebar panel, its operators, the add-on
preferences and scene properties, the modal progress of long operators, and library
search with its previews."""
