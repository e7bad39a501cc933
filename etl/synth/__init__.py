"""Synthetic MIMIC-IV, MIMIC-CXR-JPG (+DICOM) and ADNI exports with the real layouts and quirks."""
