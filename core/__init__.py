"""ulip2 core: the library. No Qt, no bpy, and no torch at import time.

geometry  meshes -> points (one sampler for every caller)
models    the Point-BERT encoder (torch), configs as data
spaces    frozen embedding spaces (open_clip, minilm)
bundle    the on-disk model bundle, runtime runs it with onnxruntime
"""

__version__ = "0.1.0"
