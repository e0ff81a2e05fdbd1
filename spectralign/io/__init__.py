"""Reading images and tile sources, TileConfiguration files, OME-TIFF stage
positions, OME-Zarr writing: the files at either end of the data path.
"""
