"""Triplets, as ULIP-2 trains on them: points, rendered views and captions per 3D object.

    core.triplets.store     the store on disk (its format is documented there); numpy and
                            the standard library only, so the Blender extension writes it
    core.triplets.build     asset files -> records, rendered in headless Blender workers
                            (local processes, or Ray tasks on a farm)
    core.triplets.caption   captions for the records, in the ulip2 environment

The store's names are this package's: `from core.triplets import TripletStore`. build and
caption are imported where used (they need the Blender pool and the captioners).
"""

from core.triplets.store import (CAPTIONED, DONE, FAILED, FORMAT, FRAME, POINT_COLUMNS, READ_VERSIONS, VERSION,
                                 Record, RecordWriter, StoreError, TripletStore, key_for_arrays, key_for_asset,
                                 key_for_file, view_name)

__all__ = ["CAPTIONED", "DONE", "FAILED", "FORMAT", "FRAME", "POINT_COLUMNS", "READ_VERSIONS", "VERSION", "Record",
           "RecordWriter", "StoreError", "TripletStore", "key_for_arrays", "key_for_asset", "key_for_file",
           "view_name"]
