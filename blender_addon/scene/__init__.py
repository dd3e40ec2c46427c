"""Blender's side of the data path, as glTF-Blender-IO's blender/ layer: evaluated objects
to arrays and points (extract, where points leave Blender y-up), views (render), files in
and out of a scene (importers, append), triplet records of objects, and the models that
tag and caption them (inference, labels)."""
