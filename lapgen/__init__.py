"""lapgen: laparoscopic image and video generation with diffusion models, and its evaluation.

Implements "Interactive Generation of Laparoscopic Videos with Diffusion Models" (Iliash et al., 2024).
Importing the package is cheap: heavy libraries (torch, diffusers, ultralytics) load inside the
functions that need them.
"""

__version__ = "0.1.0"
