"""Pipelines built on the three steps: inputs and overlap geometry, matching
of overlaps, placing and judging montages, grid and section stitching,
stack alignment, seam scores and quality pictures.
"""
