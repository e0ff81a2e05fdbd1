"""Rendering: the Renderer, blending and the render kernels, into a chunked
OME-Zarr canvas.
"""
