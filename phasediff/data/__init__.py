"""Seeded, download-free datasets: 2-D/1-D toys and sklearn's 8×8 digits.

Imports nothing else of phasediff (no processes, models or training).
"""

from phasediff.data.digits import load_digits
from phasediff.data.source import DATASETS, DataSource, get_data
from phasediff.data.toys import MULTI_SWISS_ROLL_CENTERS, TOYS, sample_toy

__all__ = [
    "DATASETS",
    "MULTI_SWISS_ROLL_CENTERS",
    "TOYS",
    "DataSource",
    "get_data",
    "load_digits",
    "sample_toy",
]
